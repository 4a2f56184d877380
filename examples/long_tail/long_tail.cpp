// Long-tailed training with learnable per-class margins (AdaptiveFace).
//
// A synthetic data set whose class sizes follow a power law, n_j = round(n_max (j+1)^-1.2)
// (at least 2), Gaussian clusters in 32 dimensions, a linear 32 -> 16 embedding learned
// together with the class weights. Three runs from the same initialisation:
//   CosFace                   fixed margin 0.35, batches drawn uniformly over the samples
//   AdaptiveMargin            learnable margins (dL/dmargins), projected to [0, 1] each step
//   AdaptiveMargin+HPM+ADS    the same on the active classes of Hard Prototype Mining (subset
//                             loss), with batches drawn by Adaptive Data Sampling
// and prints, per frequency band (head / middle / tail classes), the mean learned margin and
// the mean per-class accuracy on a balanced test set (nearest class weight by cosine).
//
//   long_tail [--steps N] [--quick]
#include <marginloss/marginloss.hpp>
#include <marginloss/sampling/adaptive_sampler.hpp>
#include <marginloss/sampling/hard_prototype_miner.hpp>
#include <marginloss/sampling/subset.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ml = marginloss;
using ml::Index;
using Mat = ml::RowMatrix<double>;
using Vec = Eigen::VectorXd;

namespace {

constexpr Index kClasses = 100, kInput = 32, kEmbed = 16, kBatch = 64, kTestPerClass = 50;
constexpr double kMaxCount = 400, kPower = 1.2;
constexpr Index kHeadEnd = 20, kMiddleEnd = 60;  // head: classes [0, 20), middle [20, 60), tail [60, 100)

double normal(ml::Xoshiro256& g) {
  const double u1 = 1.0 - g.uniform(), u2 = g.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

struct Data {
  Mat inputs;
  Eigen::VectorXi labels;
};

struct Problem {
  Data train, test;
  std::vector<Index> counts;
};

Problem make_problem() {
  ml::Xoshiro256 g(2019);
  Mat centres(kClasses, kInput);
  for (Index k = 0; k < centres.size(); ++k) centres.data()[k] = normal(g);
  const double noise = 0.9;
  Problem p;
  Index total = 0;
  for (Index j = 0; j < kClasses; ++j) {
    const auto n = std::max<Index>(2, static_cast<Index>(std::lround(kMaxCount * std::pow(double(j + 1), -kPower))));
    p.counts.push_back(n);
    total += n;
  }
  auto fill = [&](Data& d, Index rows, auto count_of) {
    d.inputs.resize(rows, kInput);
    d.labels.resize(rows);
    Index r = 0;
    for (Index j = 0; j < kClasses; ++j)
      for (Index k = 0; k < count_of(j); ++k, ++r) {
        d.labels(r) = static_cast<int>(j);
        for (Index c = 0; c < kInput; ++c) d.inputs(r, c) = centres(j, c) + noise * normal(g);
      }
  };
  fill(p.train, total, [&](Index j) { return p.counts[static_cast<std::size_t>(j)]; });
  fill(p.test, kClasses * kTestPerClass, [](Index) { return kTestPerClass; });
  return p;
}

enum class Run { cosface, adaptive, adaptive_hpm_ads };

struct Outcome {
  Vec margins;     // per class
  Vec accuracy;    // per class, balanced test set
};

// SGD with momentum and weight decay on one parameter block.
struct Sgd {
  double lr, momentum, decay;
  template <typename P, typename G, typename V>
  void step(P& param, const G& grad, V& velocity) const {
    velocity = momentum * velocity + grad + decay * param;
    param -= lr * velocity;
  }
};

Outcome train(const Problem& p, Run run, Index steps) {
  ml::Xoshiro256 g(7);
  Mat A(kEmbed, kInput), W(kClasses, kEmbed);
  for (Index k = 0; k < A.size(); ++k) A.data()[k] = normal(g) / std::sqrt(double(kInput));
  for (Index k = 0; k < W.size(); ++k) W.data()[k] = normal(g);
  Mat vA = Mat::Zero(kEmbed, kInput), vW = Mat::Zero(kClasses, kEmbed);
  Vec margins = Vec::Constant(kClasses, 0.35), vm = Vec::Zero(kClasses), dm(kClasses);
  const double s = 30, lambda = 6;
  // The policy views `margins` (ml::ClassValues): built once, it sees each in-place update of
  // the optimiser step and the projection below.
  const ml::AdaptiveMargin<double> adaptive{s, margins, lambda};
  const Sgd sgd{0.05, 0.9, 5e-4}, sgd_margin{0.05, 0.9, 0.0};

  const Index N = p.train.inputs.rows();
  ml::AdaptiveSampler ads(N, 11);
  ml::HardPrototypeMinerOptions hpm_options;
  hpm_options.k = 10;
  hpm_options.refresh_every = 500;
  ml::HardPrototypeMiner<double> hpm(hpm_options);
  ml::SubsetWorkspace<double> sws;
  ml::SubsetOptions subset_options;
  subset_options.regulariser = ml::SubsetRegulariser::active_classes;  // only active margins move
  subset_options.keep_cosines = true;  // the miner's queue rule reads the loss's cosines
  ml::Workspace<double> ws;

  ml::IndexVector batch(kBatch);
  Mat U(kBatch, kInput), X(kBatch, kEmbed), dX(kBatch, kEmbed), dW(kClasses, kEmbed), dA(kEmbed, kInput);
  Eigen::VectorXi y(kBatch);
  Eigen::Matrix<bool, Eigen::Dynamic, 1> correct(kBatch);
  for (Index step = 0; step < steps; ++step) {
    if (run == Run::adaptive_hpm_ads) {
      ads.draw(kBatch, batch);
    } else {
      for (Index i = 0; i < kBatch; ++i) batch(i) = static_cast<Index>(g.below(static_cast<std::uint64_t>(N)));
    }
    for (Index i = 0; i < kBatch; ++i) {
      U.row(i) = p.train.inputs.row(batch(i));
      y(i) = p.train.labels(batch(i));
    }
    X.noalias() = U * A.transpose();
    if (run == Run::cosface) {
      ml::forward_backward(ml::CosFace<double>{s, 0.35}, X, W, y, {dX, dW}, ws);
    } else if (run == Run::adaptive) {
      ml::forward_backward(adaptive, X, W, y, {dX, dW, dm}, ws);
    } else {
      hpm.step(W);
      const ml::ActiveSet& set = hpm.active_set(y);
      ml::forward_backward(adaptive, X, W, set, {dX, dW, dm}, sws,
                           [&] { auto o = subset_options; o.zero_inactive_rows = true; return o; }());
      hpm.update(sws, W, set);
      // Feedback for the sampler: classified correctly by the nearest class weight.
      const Mat cos = X.rowwise().normalized() * W.rowwise().normalized().transpose();
      for (Index i = 0; i < kBatch; ++i) {
        Index arg;
        cos.row(i).maxCoeff(&arg);
        correct(i) = arg == y(i);
      }
      ads.update(batch, correct);
    }
    dA.noalias() = dX.transpose() * U;
    sgd.step(A, dA, vA);
    sgd.step(W, dW, vW);
    if (run != Run::cosface) {
      sgd_margin.step(margins, dm, vm);
      ml::project_margins(margins);
    }
  }

  Outcome out;
  out.margins = run == Run::cosface ? Vec::Constant(kClasses, 0.35) : margins;
  out.accuracy = Vec::Zero(kClasses);
  const Mat emb = p.test.inputs * A.transpose();
  const Mat cos = emb.rowwise().normalized() * W.rowwise().normalized().transpose();
  for (Index i = 0; i < cos.rows(); ++i) {
    Index arg;
    cos.row(i).maxCoeff(&arg);
    if (arg == p.test.labels(i)) out.accuracy(p.test.labels(i)) += 1.0 / kTestPerClass;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Index steps = 3000;
  for (int a = 1; a < argc; ++a) {
    if (!std::strcmp(argv[a], "--quick")) steps = 300;
    else if (!std::strcmp(argv[a], "--steps") && a + 1 < argc) steps = std::atol(argv[++a]);
    else {
      std::fprintf(stderr, "usage: %s [--steps N] [--quick]\n", argv[0]);
      return 2;
    }
  }
#if defined(_OPENMP)
  omp_set_num_threads(1);  // 64 x 100 problems: threads cost more than they save
#endif
  const auto t0 = std::chrono::steady_clock::now();
  const Problem p = make_problem();
  const auto& n = p.counts;
  std::printf("long-tailed data: %ld classes, n_j = round(%g (j+1)^-%g), at least 2: %ld .. %ld per class, "
              "%ld training samples; %ld -> %ld dims; balanced test set, %ld per class; %ld steps of %ld\n",
              long(kClasses), kMaxCount, kPower, long(n.front()), long(n.back()), long(p.train.inputs.rows()),
              long(kInput), long(kEmbed), long(kTestPerClass), long(steps), long(kBatch));
  auto band = [&](const Vec& v, Index lo, Index hi) { return v.segment(lo, hi - lo).mean(); };
  std::printf("%-24s %-18s %-18s %-18s\n", "", "head", "middle", "tail");
  char hb[32], mb[32], tb[32];
  std::snprintf(hb, sizeof hb, "n %ld..%ld", long(n[0]), long(n[kHeadEnd - 1]));
  std::snprintf(mb, sizeof mb, "n %ld..%ld", long(n[kHeadEnd]), long(n[kMiddleEnd - 1]));
  std::snprintf(tb, sizeof tb, "n %ld..%ld", long(n[kMiddleEnd]), long(n[kClasses - 1]));
  std::printf("%-24s %-18s %-18s %-18s\n", "", hb, mb, tb);
  std::printf("%-24s %-18s %-18s %-18s\n", "", "margin  accuracy", "margin  accuracy", "margin  accuracy");
  const std::pair<Run, const char*> runs[] = {{Run::cosface, "CosFace"},
                                              {Run::adaptive, "AdaptiveMargin"},
                                              {Run::adaptive_hpm_ads, "AdaptiveMargin+HPM+ADS"}};
  bool tail_margins_grow = true;
  for (const auto& [run, name] : runs) {
    const Outcome o = train(p, run, steps);
    std::printf("%-24s", name);
    const Index bands[4] = {0, kHeadEnd, kMiddleEnd, kClasses};
    for (int b = 0; b < 3; ++b)
      std::printf(" %.3f   %.3f     ", band(o.margins, bands[b], bands[b + 1]), band(o.accuracy, bands[b], bands[b + 1]));
    std::printf("  (all %.3f)\n", o.accuracy.mean());
    if (run != Run::cosface)
      tail_margins_grow = tail_margins_grow && band(o.margins, kMiddleEnd, kClasses) > band(o.margins, 0, kHeadEnd);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("learned tail margins %s the head margins; %.1f s\n", tail_margins_grow ? "exceed" : "do NOT exceed", secs);
  return tail_margins_grow ? 0 : 1;
}
