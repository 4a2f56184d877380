// Thread safety: concurrent calls from two std::threads, each with its own workspace (and the
// allocating forms, which make their own), read the same inputs and give the same bits as
// the same calls made one after the other. Built and run under ThreadSanitizer by
// tests/hardening/run_tsan.sh (OpenMP off there: libgomp is not instrumented).
#include <doctest/doctest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "../support.hpp"

using namespace mltest;

namespace {

template <typename T>
struct Outputs {
  T loss = 0;
  Mat<T> dX, dW;
};

// One "job": a policy on an input, through one of the entry points.
template <typename T, typename P>
Outputs<T> run_job(const P& policy, const Mat<T>& X, const Mat<T>& W, const Eigen::VectorXi& labels, int form,
                   ml::Workspace<T>& ws) {
  Outputs<T> o;
  if (form == 0) {
    auto r = ml::forward_backward(policy, X, W, labels);
    o.loss = r.loss;
    o.dX = std::move(r.dX);
    o.dW = std::move(r.dW);
  } else if (form == 1) {
    o.dX.resize(X.rows(), X.cols());
    o.dW.resize(W.rows(), W.cols());
    o.loss = ml::forward_backward(policy, X, W, labels, {o.dX, o.dW}, ws);
  } else {
    o.dX.resize(X.rows(), X.cols());
    o.dW.resize(W.rows(), W.cols());
    const auto fwd = ml::forward(policy, X, W, labels, ws);
    o.loss = fwd.loss();
    ml::backward(fwd, T(0.5), {o.dX, o.dW});
  }
  return o;
}

template <typename T>
void concurrent_matches_sequential() {
  // Two inputs: the threads share one of them (concurrent reads) and each also has its own.
  const Case a = random_case(24, 32, 40, 201), b = random_case(17, 32, 29, 202);
  const Mat<T> Xa = a.X.cast<T>(), Wa = a.W.cast<T>(), Xb = b.X.cast<T>(), Wb = b.W.cast<T>();
  const ml::ArcFace<T> arc{T(64), T(0.5)};
  const ml::SphereFace<T> sph{4, T(5)};
  const ml::CombinedMargin<T> comb{T(64), T(1), T(0.3), T(0.2)};
  constexpr int kJobs = 9;  // (policy, input, form) triples, run in a fixed order per thread
  auto job = [&](int k, ml::Workspace<T>& ws) -> Outputs<T> {
    const int form = k / 3;                // allocating, workspace, split forward/backward
    const bool first = (k + form) % 2 == 0;  // which input
    const Mat<T>& X = first ? Xa : Xb;
    const Mat<T>& W = first ? Wa : Wb;
    const Eigen::VectorXi& y = first ? a.labels : b.labels;
    switch (k % 3) {
      case 0: return run_job(arc, X, W, y, form, ws);
      case 1: return run_job(sph, X, W, y, form, ws);
      default: return run_job(comb, X, W, y, form, ws);
    }
  };

  // Sequential reference.
  std::vector<Outputs<T>> expected;
  {
    ml::Workspace<T> ws;
    for (int k = 0; k < kJobs; ++k) expected.push_back(job(k, ws));
  }

  // Two threads, each with its own workspace, each running every job several times (in a
  // different order, so that different jobs overlap).
  constexpr int kRounds = 4;
  std::vector<std::vector<Outputs<T>>> got(2);
  auto worker = [&](int id) {
    ml::Workspace<T> ws;
    for (int r = 0; r < kRounds; ++r)
      for (int i = 0; i < kJobs; ++i) {
        const int k = id == 0 ? i : kJobs - 1 - i;
        got[static_cast<std::size_t>(id)].push_back(job(k, ws));
      }
  };
  std::thread t0(worker, 0), t1(worker, 1);
  t0.join();
  t1.join();

  for (int id = 0; id < 2; ++id) {
    const auto& g = got[static_cast<std::size_t>(id)];
    REQUIRE(g.size() == static_cast<std::size_t>(kRounds * kJobs));
    for (int r = 0; r < kRounds; ++r)
      for (int i = 0; i < kJobs; ++i) {
        const int k = id == 0 ? i : kJobs - 1 - i;
        const auto& o = g[static_cast<std::size_t>(r * kJobs + i)];
        const auto& e = expected[static_cast<std::size_t>(k)];
        CAPTURE(id);
        CAPTURE(k);
        CHECK(same_bits_scalar(o.loss, e.loss));
        CHECK(same_bits(o.dX, e.dX));
        CHECK(same_bits(o.dW, e.dW));
      }
  }
}

}  // namespace

TEST_CASE("Concurrent calls on distinct workspaces equal sequential calls (float)") {
  concurrent_matches_sequential<float>();
}
TEST_CASE("Concurrent calls on distinct workspaces equal sequential calls (double)") {
  concurrent_matches_sequential<double>();
}

TEST_CASE("Concurrent cosine-level calls equal sequential calls") {
  const Case c = random_case(20, 6, 33, 203);
  const Mat<double> cos = (c.X.rowwise().normalized() * c.W.rowwise().normalized().transpose()).eval();
  const Eigen::VectorXd scales = c.X.rowwise().norm();
  const ml::ArcFace<double> arc{64, 0.5};
  const ml::SphereFace<double> sph{4, 5.0};
  const auto e_arc = ml::cosine_forward_backward(arc, cos, c.labels);
  Mat<double> e_dcos(cos.rows(), cos.cols());
  Eigen::VectorXd e_ds(cos.rows());
  const double e_loss = ml::cosine_forward_backward(sph, cos, c.labels, scales, e_dcos, e_ds);

  bool ok[2] = {true, true};
  auto worker = [&](int id) {
    for (int r = 0; r < 6; ++r) {
      const auto got = ml::cosine_forward_backward(arc, cos, c.labels);
      Mat<double> dcos(cos.rows(), cos.cols());
      Eigen::VectorXd ds(cos.rows());
      const double loss = ml::cosine_forward_backward(sph, cos, c.labels, scales, dcos, ds);
      ok[id] = ok[id] && same_bits_scalar(got.loss, e_arc.loss) && same_bits(got.dcos, e_arc.dcos) &&
               same_bits_scalar(loss, e_loss) && same_bits(dcos, e_dcos) && same_bits(ds, e_ds);
    }
  };
  std::thread t0(worker, 0), t1(worker, 1);
  t0.join();
  t1.join();
  CHECK(ok[0]);
  CHECK(ok[1]);
}

TEST_CASE("Errors thrown concurrently are independent") {
  // One thread triggers invalid_argument repeatedly while the other computes: the failing
  // calls leave nothing behind that affects the other thread's results.
  const Case c = random_case(12, 8, 10, 204);
  const ml::CosFace<double> cosface{30, 0.35};
  const auto expected = ml::forward_backward(cosface, c.X, c.W, c.labels);
  Eigen::VectorXi bad = c.labels;
  bad(3) = 10;  // out of range
  int thrown = 0;
  bool same = true;
  std::thread t0([&] {
    for (int r = 0; r < 20; ++r) {
      try {
        (void)ml::forward_backward(cosface, c.X, c.W, bad);
      } catch (const ml::invalid_argument&) {
        ++thrown;
      }
    }
  });
  std::thread t1([&] {
    for (int r = 0; r < 20; ++r) {
      const auto got = ml::forward_backward(cosface, c.X, c.W, c.labels);
      same = same && same_bits_scalar(got.loss, expected.loss) && same_bits(got.dX, expected.dX) &&
             same_bits(got.dW, expected.dW);
    }
  });
  t0.join();
  t1.join();
  CHECK(thrown == 20);
  CHECK(same);
}
