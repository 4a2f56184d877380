// The CUDA backend against the CPU engine (ml::forward / ml::backward / ml::forward_backward):
// loss, dX and dW for every policy, in double (to 1e-12) and float (to 1e-5 on inputs whose
// cosines and norms are exact in float, so the comparison measures the GPU engine and not the
// products' summation order; to 1e-4 on random Gaussian inputs), dense and class-chunked with
// blocks that do not divide C, int32 and int64 labels, strided views, split and asynchronous
// calls with an upstream gradient != 1, the class-sharded loss, and every error with the CPU's
// message.
//
// Two CTest tests run this program: `--host-only` runs the test suite "host" (argument checks
// made before any CUDA call, workspace sizes), which needs no GPU; without it, everything runs,
// or -- when cudaGetDeviceCount fails or finds no device -- the program says so and returns
// 77, CTest's skip code.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "../support.hpp"
#include "gpu_runner.hpp"

using namespace mltest;
namespace gt = mlcuda_test;

namespace {

template <typename T>
gt::Problem<T> to_problem(const Case& c) {
  gt::Problem<T> p;
  p.B = c.X.rows();
  p.D = c.X.cols();
  p.C = c.W.rows();
  const Mat<T> X = c.X.cast<T>(), W = c.W.cast<T>();
  p.X.assign(X.data(), X.data() + X.size());
  p.W.assign(W.data(), W.data() + W.size());
  for (Index i = 0; i < c.labels.size(); ++i) p.labels.push_back(c.labels(i));
  return p;
}

template <typename T>
Mat<double> as_matrix(const std::vector<T>& v, Index rows, Index cols) {
  REQUIRE(static_cast<Index>(v.size()) == rows * cols);
  return Eigen::Map<const Mat<T>>(v.data(), rows, cols).template cast<double>();
}

// Every policy and the variants that change its code path (fallbacks, gradient modes, scale
// modes, targets, variants, conditional margins); the per-class policies are below.
template <typename T, typename Fn>
void for_each_gpu_policy(Fn&& fn) {
  using ml::Fallback;
  using ml::Gradient;
  fn(ml::NormFace<T>{16});
  fn(ml::CosFace<T>{30, T(0.35)});
  fn(ml::CosFace<T>{30, T(0.35), true});
  fn(ml::ArcFace<T>{64, T(0.5)});
  fn(ml::ArcFace<T>{64, T(0.5), Fallback::easy_margin});
  fn(ml::ArcFace<T>{64, T(0.5), Fallback::none});
  fn(ml::ArcFace<T>{64, T(0.5), Fallback::hard_threshold, Gradient::straight_through});
  fn(ml::CombinedMargin<T>{64, 1, T(0.3), T(0.2)});
  fn(ml::CombinedMargin<T>{30, T(1.5), T(0.1), T(0.05), Fallback::hard_threshold});
  fn(ml::CombinedMargin<T>{30, T(0.9), T(0.4), T(0.15), Fallback::easy_margin, Gradient::straight_through});
  fn(ml::SphereFace<T>{4, 5});
  fn(ml::SphereFace<T>{2, 0});
  fn(ml::SphereFace<T>{5, 1});
  fn(ml::SphereFace<T>{3, 0, ml::Scale::fixed, 30});
  fn(ml::SphereFace<T>{1, 5, ml::Scale::fixed, 20});
  fn(ml::SVSoftmax<T>{30, T(0), T(1.2)});
  fn(ml::SVSoftmax<T>{30, T(0.35), T(1.2)});
  fn(ml::SVSoftmax<T>{30, T(0.5), T(1.2), ml::MarginTarget::additive_angular, Fallback::hard_threshold});
  fn(ml::MVSoftmax<T>{32, T(0.35), T(1.2)});
  fn(ml::MVSoftmax<T>{32, T(0.35), T(1.12), ml::MarginTarget::additive_cosine, ml::MVVariant::adaptive,
                      Fallback::easy_margin});
  fn(ml::MVSoftmax<T>{32, T(0.35), T(1.12), ml::MarginTarget::additive_cosine, ml::MVVariant::fixed, Fallback::none,
                      true});
  fn(ml::MVSoftmax<T>{32, T(0.5), T(1.2), ml::MarginTarget::additive_angular, ml::MVVariant::fixed});
  fn(fixed_tau(ml::CurricularFace<T>{64, T(0.5), T(0.3)}));
  fn(fixed_tau(ml::CurricularFace<T>{64, T(0.5), T(0.6), T(0.99), Fallback::easy_margin}));
  fn(ml::AMMSoftmax<T>{64, T(0.5), T(0.1)});
  fn(ml::AMMSoftmax<T>{64, T(0.4), T(0.3), Fallback::none});
}

// Per-class margins for C classes: vectors the policies below view (the runner copies them to
// the device). Deterministic, distinct per class, inside every base policy's range.
template <typename T>
struct PerClassMargins {
  std::vector<T> adaptive, cosine, angular;
  explicit PerClassMargins(Index C) {
    for (Index k = 0; k < C; ++k) {
      const double u = std::fmod(0.6180339887498949 * static_cast<double>(k + 1), 1.0);
      adaptive.push_back(static_cast<T>(0.3 + 0.1 * u));      // FaceX-Zoo's U(0.3, 0.4)
      cosine.push_back(static_cast<T>(0.15 + 0.3 * u));
      angular.push_back(static_cast<T>(0.2 + 0.4 * (1.0 - u)));
    }
  }
};

// AdaptiveMargin (both regulariser scopes) and ClassMargins over the bases with a margin `m`
// (additive cosine, additive angular with its fallback, a mining policy, CurricularFace).
template <typename T, typename Fn>
void for_each_per_class_policy(const PerClassMargins<T>& m, Fn&& fn) {
  fn(ml::AdaptiveMargin<T>{30, m.adaptive, T(70)});
  fn(ml::AdaptiveMargin<T>{32, m.adaptive, T(5), ml::RegulariserScope::batch_classes});
  fn(ml::class_margins(ml::CosFace<T>{30, T(0)}, m.cosine));
  fn(ml::class_margins(ml::ArcFace<T>{64, T(0.5)}, m.angular));
  fn(ml::class_margins(ml::MVSoftmax<T>{32, T(0.35), T(1.2), ml::MarginTarget::additive_angular, ml::MVVariant::fixed},
                       m.angular));
  fn(ml::class_margins(fixed_tau(ml::CurricularFace<T>{64, T(0.5), T(0.3)}), m.angular));
}

// Every policy, the per-class ones with C classes.
template <typename T, typename Fn>
void for_each_gpu_policy(Index C, Fn&& fn) {
  for_each_gpu_policy<T>(fn);
  const PerClassMargins<T> margins(C);
  for_each_per_class_policy(margins, fn);
}

// Target cosines on both sides of every threshold of the policies above (ArcFace's
// cos(pi - m) = -0.878, the combined margins' -0.441 and -0.0348..., easy margins at 0,
// SphereFace's cos(j pi / m)), none closer than 0.01 to one.
const std::vector<double> kTargets = {-0.97, -0.91, -0.85, -0.6, -0.35, -0.15, 0.1, 0.4, 0.62, 0.77, 0.9, 0.985};

// Inputs whose normalisation and cosines are exact in float: every row has 16 non-zero entries
// +-2^r on random coordinates (r per row), so |x| = 4 2^r, x^ has entries +-1/4 and every
// product and sum in X^ W^T is a short dyadic rational; sample i's target cosine is k/16 with k
// in [-15, 15] (its row shares 15 or 16 coordinates with w_{y_i}, k of them net in agreement).
// Non-target cosines are multiples of 1/16 too. D >= 32.
Case exact_case(Index B, Index D, Index C, std::uint64_t seed) {
  SplitMix64 rng(seed);
  auto below = [&](Index n) { return static_cast<Index>(rng.next() % static_cast<std::uint64_t>(n)); };
  auto sample = [&](std::vector<Index> pool, Index k) {  // k distinct elements of pool
    for (Index a = 0; a < k; ++a) std::swap(pool[static_cast<std::size_t>(a)], pool[static_cast<std::size_t>(a + below(static_cast<Index>(pool.size()) - a))]);
    pool.resize(static_cast<std::size_t>(k));
    return pool;
  };
  std::vector<Index> all(static_cast<std::size_t>(D));
  for (Index k = 0; k < D; ++k) all[static_cast<std::size_t>(k)] = k;
  Case c;
  c.X = Mat<double>::Zero(B, D);
  c.W = Mat<double>::Zero(C, D);
  c.labels.resize(B);
  std::vector<std::vector<Index>> support(static_cast<std::size_t>(C));
  for (Index j = 0; j < C; ++j) {
    const double scale = std::ldexp(1.0, static_cast<int>(below(3)) - 1);
    support[static_cast<std::size_t>(j)] = sample(all, 16);
    for (Index k : support[static_cast<std::size_t>(j)]) c.W(j, k) = (rng.next() & 1) ? scale : -scale;
  }
  for (Index i = 0; i < B; ++i) {
    const Index y = below(C);
    c.labels(i) = static_cast<int>(y);
    const int k = static_cast<int>(below(31)) - 15;
    const int overlap = (k % 2 == 0) ? 16 : 15, agree = (k + overlap) / 2;
    const double scale = std::ldexp(1.0, static_cast<int>(below(4)) - 1);
    const auto& sy = support[static_cast<std::size_t>(y)];
    const auto shared = sample(sy, overlap);
    for (int a = 0; a < overlap; ++a) {
      const Index col = shared[static_cast<std::size_t>(a)];
      const double sign = (c.W(y, col) > 0) == (a < agree) ? 1.0 : -1.0;
      c.X(i, col) = sign * scale;
    }
    std::vector<Index> outside;
    for (Index col = 0; col < D; ++col)
      if (std::find(sy.begin(), sy.end(), col) == sy.end()) outside.push_back(col);
    for (Index col : sample(outside, 16 - overlap)) c.X(i, col) = (rng.next() & 1) ? scale : -scale;
  }
  return c;
}

std::string name_of(const char* n) { return n; }

// GPU against the CPU engine with the same split, block size and upstream gradient.
template <typename P>
void check_against_cpu(const P& policy, const Case& c, const gt::RunOptions& o, double tol) {
  using T = typename P::value_type;
  CAPTURE(name_of(P::name));
  CAPTURE(o.class_block);
  CAPTURE(o.int64_labels);
  CAPTURE(o.pad);
  CAPTURE(o.split);
  CAPTURE(o.async);
  CAPTURE(o.grad_loss);
  const Mat<T> X = c.X.cast<T>(), W = c.W.cast<T>();
  ml::Options co;
  co.class_block = o.class_block;
  ml::Workspace<T> ws;
  const T cpu_loss = ml::forward(policy, X, W, c.labels, ws, co);
  const auto cpu = ml::backward(policy, W, ws, static_cast<T>(o.grad_loss));
  const auto gpu = gt::run_gpu(policy, to_problem<T>(c), o);
  CHECK(rel_error(static_cast<double>(gpu.loss), static_cast<double>(cpu_loss)) < tol);
  CHECK(rel_error(as_matrix(gpu.dX, X.rows(), X.cols()), cpu.dX.template cast<double>()) < tol);
  CHECK(rel_error(as_matrix(gpu.dW, W.rows(), W.cols()), cpu.dW.template cast<double>()) < tol);
  if constexpr (ml::detail::has_learnable_margins<P>::value) {
    REQUIRE(static_cast<Index>(gpu.dmargins.size()) == W.rows());
    CHECK(rel_error(as_matrix(gpu.dmargins, W.rows(), 1), cpu.dmargins.template cast<double>()) < tol);
  } else {
    CHECK(gpu.dmargins.empty());
  }
  CHECK(gpu.guards_intact);
}

// The same comparison for each class block size (0: dense), default run options otherwise.
template <typename P>
void check_blocks_against_cpu(const P& policy, const Case& c, std::initializer_list<Index> blocks, double tol) {
  for (Index block : blocks) {
    gt::RunOptions o;
    o.class_block = block;
    check_against_cpu(policy, c, o, tol);
  }
}

template <typename Fn>
std::string cpu_message(Fn&& fn) {
  try {
    fn();
  } catch (const ml::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_SUITE("host") {
  TEST_CASE("host: the device's norm limits are the CPU's") {
    CHECK(gt::norm_limit_lo<float>() == ml::detail::NormRange<float>::lo);
    CHECK(gt::norm_limit_hi<float>() == ml::detail::NormRange<float>::hi);
    CHECK(gt::norm_limit_lo<double>() == ml::detail::NormRange<double>::lo);
    CHECK(gt::norm_limit_hi<double>() == ml::detail::NormRange<double>::hi);
  }

  TEST_CASE("host: workspace sizes") {
    const std::size_t budget = std::size_t(512) << 20;
    const std::size_t dense = gt::workspace_bytes<float>(256, 512, 100000, 0, budget);
    // The dense B x C cosine buffer dominates: about 256 x 100000 floats.
    CHECK(dense > std::size_t(256) * 100000 * 4);
    CHECK(dense < std::size_t(256) * 100000 * 4 + (std::size_t(4) << 20));
    const std::size_t chunked = gt::workspace_bytes<float>(256, 512, 100000, 8192, budget);
    CHECK(chunked < dense / 10);
    CHECK(gt::workspace_bytes<double>(256, 512, 100000, 8192, budget) > chunked);
    // A block >= C is the dense path.
    CHECK(gt::workspace_bytes<float>(16, 8, 100, 1000, budget) == gt::workspace_bytes<float>(16, 8, 100, 0, budget));
    // Automatic: beyond the budget, blocks that fit it.
    const std::size_t small_budget = std::size_t(64) << 20;
    const std::size_t automatic = gt::workspace_bytes<float>(256, 512, 1000000, 0, small_budget);
    CHECK(automatic < small_budget + (std::size_t(16) << 20));
    CHECK(automatic > small_budget / 2);
    // Sharded adds the B x D partial dX.
    CHECK(gt::sharded_workspace_bytes<float>(64, 128, 1000, 0) >= gt::workspace_bytes<float>(64, 128, 1000, 0, budget) + 64 * 128 * 4);
  }

  TEST_CASE("host: argument errors are thrown before any CUDA call, with the CPU's messages") {
    using F = gt::HostFault;
    auto message = [](F f) {
      const gt::Error e = gt::host_error(f);
      CHECK(e.thrown);
      CHECK(e.invalid_argument);
      return e.message;
    };
    const std::string small = message(F::small_workspace);
    CHECK(small.find("marginloss: the workspace has ") == 0);
    CHECK(small.find("(marginloss::cuda::workspace_bytes<T>(B, D, C, options))") != std::string::npos);
    CHECK(message(F::no_workspace).find("the workspace has no device memory") != std::string::npos);
    // Shapes and hyper-parameters: the CPU's messages, word for word.
    Case c = random_case(4, 5, 6, 1);
    const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
    const Mat<float> W6 = Mat<float>::Ones(6, 6);
    CHECK(message(F::w_columns) == cpu_message([&] { ml::forward_backward(ml::CosFace<float>{}, X, W6, c.labels); }));
    const Mat<float> X0(0, 5);
    const Eigen::VectorXi l0(0);
    CHECK(message(F::empty_batch) == cpu_message([&] { ml::forward_backward(ml::CosFace<float>{}, X0, W, l0); }));
    CHECK(message(F::invalid_policy) == cpu_message([&] { ml::forward_backward(ml::CosFace<float>{-1.f}, X, W, c.labels); }));
    ml::Options negative;
    negative.class_block = -1;
    CHECK(message(F::negative_block) == cpu_message([&] { ml::forward_backward(ml::CosFace<float>{}, X, W, c.labels, negative); }));
    ml::Workspace<float> ws;
    CHECK(message(F::backward_first) == cpu_message([&] { ml::backward(ml::CosFace<float>{}, W, ws, 1.f); }));
    const Mat<float> W5 = W.topRows(5);
    ml::LocalCommunicator local;
    Mat<float> dX(4, 5), dW5(5, 5);
    CHECK(message(F::shard_outside) ==
          cpu_message([&] { ml::sharded_forward_backward(ml::CosFace<float>{}, X, W5, 3, 6, c.labels, local, dX, dW5, ws); }));
    CHECK(message(F::x_leading_dimension) == "marginloss: X has leading dimension 4 but 5 columns: ld must be >= cols");
    CHECK(message(F::null_labels) == "marginloss: labels is a null device pointer");
    CHECK(message(F::null_cublas) == "marginloss: the cuBLAS handle is null");
    // CurricularFace updating tau: a const policy, and any asynchronous call.
    const ml::CurricularFace<float> constant{};
    CHECK(message(F::state_const) == cpu_message([&] { ml::forward_backward(constant, X, W, c.labels); }));
    const std::string async_state = message(F::state_async);
    CHECK(async_state.find("marginloss: CurricularFace: update_tau_in_forward = true needs the batch's mean target "
                           "cosine on the host") == 0);
        const std::vector<float> five(5, 0.3f);
    CHECK(message(F::margins_count) ==
          cpu_message([&] { ml::forward_backward(ml::AdaptiveMargin<float>{30, five, 70.f}, X, W, c.labels); }));
    CHECK(message(F::margins_null) == cpu_message([&] {
            ml::forward_backward(ml::ClassMargins<ml::CosFace<float>>{{}, ml::ClassValues<float>(nullptr, 6)}, X, W, c.labels);
          }));
  }
}

TEST_SUITE("gpu") {
  TEST_CASE("double: GPU equals CPU to 1e-12 for every policy, dense and chunked, int32 and int64 labels, strided views") {
    const Case random = random_case(13, 24, 57, 11);
    const Case targets = case_with_targets(kTargets, 16, 40, 12);
    int run = 0;
    REQUIRE(random.W.rows() == 57);
    REQUIRE(targets.W.rows() == 40);
    auto both = [&](const auto& policy) {
      for (const Case* c : {&random, &targets})
        for (Index block : {0, 5, 16, 39}) {
          gt::RunOptions o;
          o.class_block = block;
          o.int64_labels = (run % 2) == 1;
          o.pad = (run % 3 == 2) ? 3 : 0;
          ++run;
          check_against_cpu(policy, *c, o, 1e-12);
        }
    };
    for_each_gpu_policy<double>(both);
    // Per-class policies need margins for each case's C.
    for (const Case* c : {&random, &targets}) {
      const PerClassMargins<double> margins(c->W.rows());
      for_each_per_class_policy(margins, [&](const auto& policy) {
        for (Index block : {0, 5, 16, 39}) {
          gt::RunOptions o;
          o.class_block = block;
          o.int64_labels = (run % 2) == 1;
          o.pad = (run % 3 == 2) ? 3 : 0;
          ++run;
          check_against_cpu(policy, *c, o, 1e-12);
        }
      });
    }
  }

  TEST_CASE("double: rows wider than one segment of the row pass (C = 5000), dense and in blocks") {
    const Case wide = random_case(3, 8, 5000, 13);
    for_each_gpu_policy<double>(wide.W.rows(), [&](const auto& policy) { check_blocks_against_cpu(policy, wide, {0, 2100}, 1e-12); });
  }

  TEST_CASE("float: GPU equals CPU to 1e-5 on inputs exact in float, every policy, dense and chunked") {
    const Case exact = exact_case(16, 48, 301, 21);
    const Case wide = exact_case(3, 48, 4500, 22);
    int run = 0;
    for_each_gpu_policy<float>(exact.W.rows(), [&](const auto& policy) {
      for (Index block : {0, 7, 64, 300}) {
        gt::RunOptions o;
        o.class_block = block;
        o.int64_labels = (run++ % 2) == 1;
        check_against_cpu(policy, exact, o, 1e-5);
      }
    });
    for_each_gpu_policy<float>(wide.W.rows(), [&](const auto& policy) { check_blocks_against_cpu(policy, wide, {0, 2049}, 1e-5); });
  }

  TEST_CASE("float: GPU equals CPU to 1e-4 on random Gaussian inputs (different summation orders in the products)") {
    const Case random = random_case(32, 64, 500, 31);
    for_each_gpu_policy<float>(random.W.rows(), [&](const auto& policy) { check_blocks_against_cpu(policy, random, {0, 128}, 1e-4); });
  }

  TEST_CASE("Split forward/backward and asynchronous calls with an upstream gradient != 1") {
    const Case random = random_case(9, 12, 31, 41);
    const Case exact = exact_case(9, 40, 31, 42);
    const PerClassMargins<double> margins_d(31);
    const PerClassMargins<float> margins_f(31);
    for (bool async : {false, true})
      for (double grad : {2.5, -0.75})
        for (Index block : {0, 8}) {
          gt::RunOptions o;
          o.split = !async;
          o.async = async;
          o.grad_loss = grad;
          o.class_block = block;
          o.int64_labels = async;
          check_against_cpu(ml::ArcFace<double>{64, 0.5}, random, o, 1e-12);
          check_against_cpu(ml::SphereFace<double>{4, 5}, random, o, 1e-12);
          check_against_cpu(fixed_tau(ml::CurricularFace<double>{64, 0.5, 0.3}), random, o, 1e-12);
          check_against_cpu(ml::CosFace<float>{30, 0.35f}, exact, o, 1e-5);
          check_against_cpu(ml::SphereFace<float>{4, 5.f}, exact, o, 1e-5);
          check_against_cpu(ml::MVSoftmax<float>{32, 0.35f, 1.2f}, exact, o, 1e-5);
          check_against_cpu(ml::AdaptiveMargin<double>{30, margins_d.adaptive, 70.0}, random, o, 1e-12);
          check_against_cpu(ml::AdaptiveMargin<float>{30, margins_f.adaptive, 5.f, ml::RegulariserScope::batch_classes},
                            exact, o, 1e-5);
          check_against_cpu(ml::class_margins(ml::ArcFace<float>{64, 0.5f}, margins_f.angular), exact, o, 1e-5);
        }
  }

  TEST_CASE("Sharded over 2 and 3 in-process ranks equals the single-process CPU loss, every policy") {
    const Case c = random_case(8, 6, 19, 3);
    auto sharded_equals_cpu = [&](const auto& policy) {
      using P = std::decay_t<decltype(policy)>;
      CAPTURE(name_of(P::name));
      const auto dense = ml::forward_backward(policy, c.X, c.W, c.labels);
      for (int ranks : {2, 3})
        for (Index block : {0, 2}) {
          CAPTURE(ranks);
          CAPTURE(block);
          const auto r = gt::run_gpu_sharded(policy, to_problem<double>(c), ranks, block);
          for (int k = 1; k < ranks; ++k) {
            CHECK(r[static_cast<std::size_t>(k)].loss == r[0].loss);  // identical on every rank
            CHECK(r[static_cast<std::size_t>(k)].dX == r[0].dX);
          }
          CHECK(rel_error(r[0].loss, dense.loss) < 1e-12);
          CHECK(rel_error(as_matrix(r[0].dX, 8, 6), dense.dX) < 1e-12);
          CHECK(rel_error(as_matrix(r[0].dW, 19, 6), dense.dW) < 1e-12);
        }
    };
    for_each_gpu_policy<double>(sharded_equals_cpu);
    // Fixed per-class margins (each rank views all C margins; labels are global).
    const PerClassMargins<double> margins(19);
    sharded_equals_cpu(ml::class_margins(ml::ArcFace<double>{64, 0.5}, margins.angular));
  }

  TEST_CASE("Errors found on the device: the CPU's messages") {
    using F = gt::DeviceFault;
    const Case c = random_case(13, 24, 7, 51);
    const ml::CosFace<float> policy{30, 0.35f};
    const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
    auto gpu = [&](F f, const auto& p) {
      const gt::Error e = gt::run_gpu_error(p, to_problem<typename std::decay_t<decltype(p)>::value_type>(c), f);
      CHECK(e.thrown);
      CHECK(e.invalid_argument);
      return e.message;
    };
    {
      Eigen::VectorXi labels = c.labels;
      labels(1) = 7;
      CHECK(gpu(F::label_too_large, policy) == cpu_message([&] { ml::forward_backward(policy, X, W, labels); }));
      labels = c.labels;
      labels(0) = 7;
      CHECK(gpu(F::async_label, policy) == cpu_message([&] { ml::forward_backward(policy, X, W, labels); }));
      CHECK(gpu(F::unchecked_async, policy) == cpu_message([&] { ml::forward_backward(policy, X, W, labels); }));
      Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> labels64 = c.labels.cast<std::int64_t>();
      labels64(2) = -3;
      CHECK(gpu(F::label_negative, policy) == cpu_message([&] { ml::forward_backward(policy, X, W, labels64); }));
    }
    {
      Mat<float> Xz = X;
      Xz.row(2).setZero();
      CHECK(gpu(F::zero_x_row, policy) == cpu_message([&] { ml::forward_backward(policy, Xz, W, c.labels); }));
      Mat<float> Xn = X;
      Xn(1, 3) = std::numeric_limits<float>::quiet_NaN();
      CHECK(gpu(F::nan_in_x, policy) == cpu_message([&] { ml::forward_backward(policy, Xn, W, c.labels); }));
      const std::string huge = gpu(F::huge_x_row, policy);
      CHECK(huge.find("marginloss: X row 1 has norm ") == 0);
      CHECK(huge.find(", outside the supported range [") != std::string::npos);
      Mat<float> Wb = W;
      Wb(4, 2) = std::numeric_limits<float>::quiet_NaN();
      Wb.row(6).setZero();
      CHECK(gpu(F::bad_w_rows, policy) == cpu_message([&] { ml::forward_backward(policy, X, Wb, c.labels); }));
    }
    {
      ml::Workspace<float> ws;
      auto after_forward = [&](auto&& then) {
        return cpu_message([&] {
          ml::forward(policy, X, W, c.labels, ws);
          then();
        });
      };
      const float nan = std::numeric_limits<float>::quiet_NaN();
      Mat<float> dX(13, 24), dW(7, 24);
      const std::string nan_grad = after_forward([&] { ml::backward(policy, W, ws, nan, dX, dW); });
      CHECK(gpu(F::nan_grad_host, policy) == nan_grad);
      CHECK(gpu(F::nan_grad_device, policy) == nan_grad);
      CHECK(gpu(F::backward_twice, policy) == after_forward([&] {
              ml::backward(policy, W, ws, 1.f, dX, dW);
              ml::backward(policy, W, ws, 1.f, dX, dW);
            }));
      const Mat<float> W6 = W.topRows(6);
      Mat<float> dW6(6, 24);
      CHECK(gpu(F::backward_other_w, policy) == after_forward([&] { ml::backward(policy, W6, ws, 1.f, dX, dW6); }));
      Mat<float> dX12(12, 24);
      CHECK(gpu(F::dx_shape, policy) == after_forward([&] { ml::backward(policy, W, ws, 1.f, dX12, dW); }));
    }
    {
      // A scale whose logits fit in float but whose loss does not.
      const Case t = case_with_targets(kTargets, 16, 40, 52);
      const ml::NormFace<float> huge{3e38f};
      const Mat<float> Xt = t.X.cast<float>(), Wt = t.W.cast<float>();
      const std::string cpu = cpu_message([&] { ml::forward_backward(huge, Xt, Wt, t.labels); });
      CHECK(cpu.find("is not representable") != std::string::npos);
      const gt::Error e = gt::run_gpu_error(huge, to_problem<float>(t), F::overflow);
      CHECK(e.message == cpu);
    }
  }

  TEST_CASE("Run to run: the same call twice gives the same bits (dense, chunked, per-class margins)") {
    const Case c = random_case(64, 96, 3000, 71);
    const PerClassMargins<float> m(3000);
    auto same_bits = [&](const auto& policy, Index block) {
      using P = std::decay_t<decltype(policy)>;
      CAPTURE(name_of(P::name));
      CAPTURE(block);
      gt::RunOptions o;
      o.class_block = block;
      const auto a = gt::run_gpu(policy, to_problem<float>(c), o);
      const auto b = gt::run_gpu(policy, to_problem<float>(c), o);
      CHECK(std::memcmp(&a.loss, &b.loss, sizeof a.loss) == 0);
      CHECK((a.dX.size() == b.dX.size() && std::memcmp(a.dX.data(), b.dX.data(), sizeof(float) * a.dX.size()) == 0));
      CHECK((a.dW.size() == b.dW.size() && std::memcmp(a.dW.data(), b.dW.data(), sizeof(float) * a.dW.size()) == 0));
      CHECK((a.dmargins.size() == b.dmargins.size() &&
             std::memcmp(a.dmargins.data(), b.dmargins.data(), sizeof(float) * a.dmargins.size()) == 0));
    };
    for (Index block : {0, 700}) {
      same_bits(ml::ArcFace<float>{64, 0.5f}, block);
      same_bits(ml::SphereFace<float>{4, 5.f}, block);
      same_bits(ml::AdaptiveMargin<float>{30, m.adaptive, 70.f}, block);
      same_bits(ml::class_margins(ml::CosFace<float>{30, 0.f}, m.cosine), block);
    }
  }

  TEST_CASE("CurricularFace's tau is updated by the GPU forward as by the CPU's, step after step") {
    const Case c = random_case(21, 16, 97, 81);
    const PerClassMargins<double> m(97);
    ml::CurricularFace<double> cpu{64, 0.5, 0.1}, gpu{64, 0.5, 0.1};
    auto cpu_per_class = ml::class_margins(ml::CurricularFace<double>{64, 0.5, 0.1}, m.angular);
    auto gpu_per_class = cpu_per_class;
    for (int step = 0; step < 3; ++step)
      for (Index block : {0, 40}) {
        CAPTURE(step);
        CAPTURE(block);
        ml::Options o;
        o.class_block = block;
        const auto want = ml::forward_backward(cpu, c.X, c.W, c.labels, o);
        const auto got = gt::run_gpu_updating(gpu, to_problem<double>(c), block);
        CHECK(gpu.tau == doctest::Approx(cpu.tau).epsilon(1e-14));
        CHECK(rel_error(got.loss, want.loss) < 1e-12);
        CHECK(rel_error(as_matrix(got.dX, 21, 16), want.dX) < 1e-12);
        CHECK(rel_error(as_matrix(got.dW, 97, 16), want.dW) < 1e-12);
        const auto want_pc = ml::forward_backward(cpu_per_class, c.X, c.W, c.labels, o);
        const auto got_pc = gt::run_gpu_updating(gpu_per_class, to_problem<double>(c), block);
        CHECK(gpu_per_class.base.tau == doctest::Approx(cpu_per_class.base.tau).epsilon(1e-14));
        CHECK(gpu_per_class.margins.data == m.angular.data());  // the caller's view is kept
        CHECK(rel_error(got_pc.loss, want_pc.loss) < 1e-12);
      }
    CHECK(gpu.tau != 0.1);
  }

  TEST_CASE("Per-class margins rejected on the device: the CPU's messages, synchronous and asynchronous") {
    const Case c = random_case(13, 24, 7, 61);
    const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
    const PerClassMargins<float> m(7);
    // The GPU copy of the margins gets `value` at class k; the CPU runs on a host copy with it.
    auto compare = [&](const auto& make_policy, const std::vector<float>& good, Index k, float value) {
      CAPTURE(k);
      CAPTURE(value);
      std::vector<float> bad = good;
      bad[static_cast<std::size_t>(k)] = value;
      const std::string cpu = cpu_message([&] { ml::forward_backward(make_policy(bad), X, W, c.labels); });
      CHECK(cpu.find("margins(" + std::to_string(k) + ")") != std::string::npos);
      for (bool async : {false, true}) {
        CAPTURE(async);
        const gt::Error e = gt::run_gpu_class_value_error(make_policy(good), to_problem<float>(c), k, value, async);
        CHECK(e.thrown);
        CHECK(e.invalid_argument);
        CHECK(e.message == cpu);
      }
    };
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    auto adaptive = [](const std::vector<float>& v) { return ml::AdaptiveMargin<float>{30, v, 70.f}; };
    auto arc = [](const std::vector<float>& v) { return ml::class_margins(ml::ArcFace<float>{64, 0.5f}, v); };
    auto cosine = [](const std::vector<float>& v) { return ml::class_margins(ml::CosFace<float>{30, 0.f}, v); };
    compare(adaptive, m.adaptive, 4, nan);
    compare(adaptive, m.adaptive, 0, -inf);
    compare(arc, m.angular, 2, 4.f);
    compare(arc, m.angular, 6, -0.1f);
    compare(cosine, m.cosine, 5, inf);
  }

  TEST_CASE("A bad shard makes every rank throw instead of deadlocking") {
    const std::vector<std::string> messages = gt::run_gpu_sharded_bad_shard();
    REQUIRE(messages.size() == 2);
    CHECK(messages[0].find("another rank rejected its input") != std::string::npos);
    CHECK(messages[1].find("W row 0 contains a non-finite value") != std::string::npos);
  }
}

int main(int argc, char** argv) {
  bool host_only = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--host-only")
      host_only = true;
    else
      args.push_back(argv[i]);
  }
  doctest::Context context;
  context.applyCommandLine(static_cast<int>(args.size()), args.data());
  if (host_only) {
    context.addFilter("test-suite", "host");
    return context.run();
  }
  std::string why;
  if (!gt::cuda_device_available(why)) {
    std::printf("marginloss CUDA tests: no CUDA device (%s), skipped\n", why.c_str());
    std::fflush(stdout);
    return 77;
  }
  return context.run();
}
