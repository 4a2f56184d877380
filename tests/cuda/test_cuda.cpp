// The CUDA backend against the CPU engine (ml::forward / ml::backward / ml::forward_backward):
// loss, dX and dW for every policy, in double (to 1e-12) and float (to 1e-5 on inputs whose
// cosines and norms are exact in float, so the comparison measures the GPU engine and not the
// products' summation order; to 1e-4 on random Gaussian inputs), dense and class-chunked with
// blocks that do not divide C, int32 and int64 labels, strided views, split and asynchronous
// calls (cuda::Execution and cuda::Async, the upstream gradient on the host or in device memory)
// with an upstream gradient != 1, the class-sharded loss (ml::Shard), and every error with the
// CPU's message. The policies are policies.hpp's list (every test that runs "every policy" runs it
// through for_each_run, the one loop over policies and run options); the faults are
// faults.hpp's, injected by naming them.
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
#include "faults.hpp"

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
  CAPTURE(o.device_grad);
  CAPTURE(o.async);
  CAPTURE(o.fused_async);
  CAPTURE(o.local_shard);
  CAPTURE(o.grad_loss);
  const Mat<T> X = c.X.cast<T>(), W = c.W.cast<T>();
  ml::Options co;
  co.class_block = o.class_block;
  ml::Workspace<T> ws;
  Mat<T> dX(X.rows(), X.cols()), dW(W.rows(), W.cols());
  ml::Vector<T> dmargins(W.rows());
  const auto fwd = ml::forward(policy, X, W, c.labels, ws, co);
  const T cpu_loss = fwd.loss();
  if constexpr (ml::detail::has_learnable_margins<P>::value)
    ml::backward(fwd, static_cast<T>(o.grad_loss), {dX, dW, dmargins});
  else
    ml::backward(fwd, static_cast<T>(o.grad_loss), {dX, dW});
  const auto gpu = gt::run_gpu(policy, to_problem<T>(c), o);
  CHECK(rel_error(static_cast<double>(gpu.loss), static_cast<double>(cpu_loss)) < tol);
  CHECK(rel_error(as_matrix(gpu.dX, X.rows(), X.cols()), dX.template cast<double>()) < tol);
  CHECK(rel_error(as_matrix(gpu.dW, W.rows(), W.cols()), dW.template cast<double>()) < tol);
  if constexpr (ml::detail::has_learnable_margins<P>::value) {
    REQUIRE(static_cast<Index>(gpu.dmargins.size()) == W.rows());
    CHECK(rel_error(as_matrix(gpu.dmargins, W.rows(), 1), dmargins.template cast<double>()) < tol);
  } else {
    CHECK(gpu.dmargins.empty());
  }
  CHECK(gpu.guards_intact);
  CHECK(gpu.device_loss_ok);
}

// One run per class block (0: dense), default options otherwise.
std::vector<gt::RunOptions> per_block(std::initializer_list<Index> blocks) {
  std::vector<gt::RunOptions> runs;
  for (Index block : blocks) {
    gt::RunOptions o;
    o.class_block = block;
    runs.push_back(o);
  }
  return runs;
}

// Run options as given.
struct SameOptions {
  void operator()(gt::RunOptions&) const {}
};

// Int64 labels every other run and, with `pad`, padded leading dimensions every third run.
struct Alternate {
  bool pad = false;
  int run = 0;
  void operator()(gt::RunOptions& o) {
    o.int64_labels = run % 2 == 1;
    if (pad) o.pad = run % 3 == 2 ? 3 : 0;
    ++run;
  }
};

// The one loop over policies and run options: fn(policy, options) for every policy of
// policies.hpp's list (per-class margins for C classes) and every run of `runs`, vary(options)
// first. vary is called once per run, in order, so a stateful one (Alternate) changes the
// options from run to run over the whole loop.
template <typename T, typename Vary, typename Fn>
void for_each_run(Index C, const std::vector<gt::RunOptions>& runs, Vary&& vary, Fn&& fn) {
  const gt::PerClassMargins<T> margins(C);
  gt::for_each_gpu_policy(margins, [&](const auto& policy) {
    for (gt::RunOptions o : runs) {
      vary(o);
      fn(policy, o);
    }
  });
}

// Every policy against the CPU on case c, in precision T, for each run.
template <typename T, typename Vary = SameOptions>
void check_every_policy(const Case& c, const std::vector<gt::RunOptions>& runs, double tol, Vary&& vary = {}) {
  for_each_run<T>(c.W.rows(), runs, vary,
                  [&](const auto& policy, const gt::RunOptions& o) { check_against_cpu(policy, c, o, tol); });
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

// The GPU's message for fault f (faults.hpp) with `policy` on `problem`: it must throw a
// marginloss::invalid_argument.
template <typename P, typename T = typename P::value_type>
std::string gpu_message(const P& policy, const gt::Problem<T>& problem, gt::Fault f) {
  const gt::Error e = gt::run_with_fault(policy, problem, f);
  CHECK(e.thrown);
  CHECK(e.invalid_argument);
  return e.message;
}

// The CPU engine's message for forward_backward on `problem` with fault f injected (its bad
// inputs, labels in the type of the fault's call): the reference of the faults of the inputs.
template <typename P, typename T = typename P::value_type>
std::string cpu_message(const P& policy, gt::Problem<T> problem, gt::Fault f) {
  gt::inject(f, problem);
  const Mat<T> X = Eigen::Map<const Mat<T>>(problem.X.data(), problem.B, problem.D);
  const Mat<T> W = Eigen::Map<const Mat<T>>(problem.W.data(), problem.C, problem.D);
  const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> labels64 =
      Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>>(problem.labels.data(), problem.B);
  const Eigen::VectorXi labels32 = labels64.cast<int>();
  return cpu_message([&] {
    if (gt::int64_labels(f))
      ml::forward_backward(policy, X, W, labels64);
    else
      ml::forward_backward(policy, X, W, labels32);
  });
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
    using F = gt::Fault;
    const Case c = random_case(4, 5, 6, 1);
    const gt::Problem<float> problem = to_problem<float>(c);
    const ml::CosFace<float> cosface{};
    auto message = [&](F f, const auto& policy) { return gpu_message(policy, problem, f); };
    const std::string small = message(F::small_workspace, cosface);
    CHECK(small.find("marginloss: the workspace has ") == 0);
    CHECK(small.find("(marginloss::cuda::workspace_bytes<T>(B, D, C, options))") != std::string::npos);
    CHECK(message(F::no_workspace, cosface).find("the workspace has no device memory") != std::string::npos);
    // Shapes and hyper-parameters: the CPU's messages, word for word.
    const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
    const Mat<float> W6 = Mat<float>::Ones(6, 6);
    CHECK(message(F::w_columns, cosface) == cpu_message([&] { ml::forward_backward(cosface, X, W6, c.labels); }));
    const Mat<float> X0(0, 5);
    const Eigen::VectorXi l0(0);
    CHECK(message(F::empty_batch, cosface) == cpu_message([&] { ml::forward_backward(cosface, X0, W, l0); }));
    const ml::CosFace<float> invalid{-1.f};
    CHECK(message(F::policy_on_host, invalid) == cpu_message([&] { ml::forward_backward(invalid, X, W, c.labels); }));
    ml::Options negative;
    negative.class_block = -1;
    CHECK(message(F::negative_block, cosface) == cpu_message([&] { ml::forward_backward(cosface, X, W, c.labels, negative); }));
    ml::Workspace<float> ws;
    const Mat<float> W5 = W.topRows(5);
    ml::LocalCommunicator local;
    Mat<float> dX(4, 5), dW5(5, 5);
    CHECK(message(F::shard_outside, cosface) ==
          cpu_message([&] { ml::forward_backward(cosface, X, W5, c.labels, {dX, dW5}, ws, ml::Shard{3, 6, local}); }));
    // A sharded call runs on comm.stream(): an Execution or Async on another stream is rejected.
    const std::string other_stream =
        "marginloss: the execution's stream is not the communicator's: a sharded call runs on comm.stream()";
    CHECK(message(F::shard_other_stream, cosface) == other_stream);
    CHECK(message(F::shard_other_stream_async, cosface) == other_stream);
    CHECK(message(F::x_leading_dimension, cosface) == "marginloss: X has leading dimension 4 but 5 columns: ld must be >= cols");
    CHECK(message(F::null_labels, cosface) == "marginloss: labels is a null device pointer");
    CHECK(message(F::null_cublas, cosface) == "marginloss: the cuBLAS handle is null");
    // CurricularFace updating tau: a const policy, and any asynchronous call.
    const ml::CurricularFace<float> updating{};
    CHECK(message(F::policy_on_host, updating) == cpu_message([&] { ml::forward_backward(updating, X, W, c.labels); }));
    const std::string async_state = message(F::policy_on_host_async, updating);
    CHECK(async_state.find("marginloss: CurricularFace: update_tau_in_forward = true needs the batch's mean target "
                           "cosine on the host") == 0);
    const std::vector<float> five(5, 0.3f);
    const ml::AdaptiveMargin<float> five_margins{30, five, 70.f};
    CHECK(message(F::policy_on_host, five_margins) == cpu_message([&] { ml::forward_backward(five_margins, X, W, c.labels); }));
    const ml::ClassMargins<ml::CosFace<float>> null_margins{{}, ml::ClassValues<float>(nullptr, 6)};
    CHECK(message(F::policy_on_host, null_margins) == cpu_message([&] { ml::forward_backward(null_margins, X, W, c.labels); }));
  }

  TEST_CASE("host: Gradients' dmargins is given exactly for learnable margins, as on the CPU (a runtime error)") {
    using F = gt::Fault;
    const Case c = random_case(4, 5, 6, 2);
    const gt::Problem<float> problem = to_problem<float>(c);
    const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
    Mat<float> dX(4, 5), dW(6, 5);
    ml::Vector<float> dmargins(6);
    ml::Workspace<float> ws;
    // Learnable margins without dmargins.
    const std::vector<float> six(6, 0.35f);
    const ml::AdaptiveMargin<float> adaptive{30, six, 70.f};
    const std::string missing = gpu_message(adaptive, problem, F::dmargins_flipped);
    CHECK(missing ==
          "marginloss: AdaptiveMargin has learnable margins: pass Gradients{dX, dW, dmargins} (C entries, device memory) "
          "so they get their gradient, or use ml::class_margins(ml::CosFace<T>{s, 0}, margins) to keep them fixed");
    const std::string cpu_missing = cpu_message([&] { ml::forward_backward(adaptive, X, W, c.labels, {dX, dW}, ws); });
    const std::string head = "marginloss: AdaptiveMargin has learnable margins: pass Gradients{dX, dW, dmargins} (C entries";
    CHECK(cpu_missing.find(head) == 0);
    CHECK(missing.find(head) == 0);
    // dmargins for a policy without learnable margins (fixed per-class margins included).
    const ml::CosFace<float> cosface{};
    CHECK(gpu_message(cosface, problem, F::dmargins_flipped) ==
          "marginloss: CosFace has no learnable margins: dmargins must be empty (Gradients{dX, dW})");
    CHECK(cpu_message([&] { ml::forward_backward(cosface, X, W, c.labels, {dX, dW, dmargins}, ws); })
              .find("marginloss: CosFace has no learnable margins: dmargins must be ") == 0);
    const auto fixed = ml::class_margins(ml::ArcFace<float>{64, 0.5f}, six);
    CHECK(gpu_message(fixed, problem, F::dmargins_flipped) ==
          "marginloss: ArcFace has no learnable margins: dmargins must be empty (Gradients{dX, dW})");
  }
}

TEST_SUITE("gpu") {
  TEST_CASE("double: GPU equals CPU to 1e-12 for every policy, dense and chunked, int32 and int64 labels, strided views") {
    const Case random = random_case(13, 24, 57, 11);
    const Case targets = case_with_targets(kTargets, 16, 40, 12);
    REQUIRE(random.W.rows() == 57);
    REQUIRE(targets.W.rows() == 40);
    Alternate vary{true};
    for (const Case* c : {&random, &targets}) check_every_policy<double>(*c, per_block({0, 5, 16, 39}), 1e-12, vary);
  }

  TEST_CASE("double: rows wider than one segment of the row pass (C = 5000), dense and in blocks") {
    const Case wide = random_case(3, 8, 5000, 13);
    check_every_policy<double>(wide, per_block({0, 2100}), 1e-12);
  }

  TEST_CASE("float: GPU equals CPU to 1e-5 on inputs exact in float, every policy, dense and chunked") {
    const Case exact = exact_case(16, 48, 301, 21);
    const Case wide = exact_case(3, 48, 4500, 22);
    check_every_policy<float>(exact, per_block({0, 7, 64, 300}), 1e-5, Alternate{});
    check_every_policy<float>(wide, per_block({0, 2049}), 1e-5);
  }

  TEST_CASE("float: GPU equals CPU to 1e-4 on random Gaussian inputs (different summation orders in the products)") {
    const Case random = random_case(32, 64, 500, 31);
    check_every_policy<float>(random, per_block({0, 128}), 1e-4);
  }

  TEST_CASE("Split forward/backward and asynchronous calls with an upstream gradient != 1") {
    const Case random = random_case(9, 12, 31, 41);
    const Case exact = exact_case(9, 40, 31, 42);
    std::vector<gt::RunOptions> runs;
    // forward(Execution) + backward(host gradient); forward(Async) + backward(device gradient).
    for (bool async : {false, true})
      for (double grad : {2.5, -0.75})
        for (Index block : {0, 8}) {
          gt::RunOptions o;
          o.split = !async;
          o.async = async;
          o.grad_loss = grad;
          o.class_block = block;
          o.int64_labels = async;
          runs.push_back(o);
        }
    // forward(Execution) + backward(device gradient): synchronous.
    gt::RunOptions device_grad;
    device_grad.split = true;
    device_grad.device_grad = true;
    device_grad.grad_loss = -0.75;
    device_grad.class_block = 8;
    runs.push_back(device_grad);
    // forward_backward(..., Async): the loss through the returned device pointer (gradient 1).
    for (Index block : {0, 8}) {
      gt::RunOptions o;
      o.fused_async = true;
      o.class_block = block;
      o.int64_labels = block > 0;
      runs.push_back(o);
    }
    check_every_policy<double>(random, runs, 1e-12);
    check_every_policy<float>(exact, runs, 1e-5);
  }

  TEST_CASE("A Shard over the single-GPU communicator is the single-GPU loss (on a workspace of workspace_bytes)") {
    const Case random = random_case(9, 12, 31, 43);
    std::vector<gt::RunOptions> runs = per_block({0, 8});
    gt::RunOptions split;
    split.split = true;
    split.grad_loss = 2.5;
    split.class_block = 8;
    runs.push_back(split);
    for (gt::RunOptions& o : runs) o.local_shard = true;
    for_each_run<double>(31, runs, SameOptions{}, [&](const auto& policy, const gt::RunOptions& o) {
      // The sharded entry points take no policy with learnable margins (a compile-time error).
      if constexpr (!ml::detail::has_learnable_margins<std::decay_t<decltype(policy)>>::value)
        check_against_cpu(policy, random, o, 1e-12);
    });
  }

  TEST_CASE("Sharded over 2 and 3 in-process ranks equals the single-process CPU loss, every policy") {
    const Case c = random_case(8, 6, 19, 3);
    const gt::Problem<double> problem = to_problem<double>(c);
    // Every policy but those with learnable margins (the sharded entry points take none): the
    // per-class ones view all C margins on each rank (labels are global).
    for_each_run<double>(19, per_block({0, 2}), Alternate{}, [&](const auto& policy, const gt::RunOptions& o) {
      using P = std::decay_t<decltype(policy)>;
      if constexpr (!ml::detail::has_learnable_margins<P>::value) {
        CAPTURE(name_of(P::name));
        CAPTURE(o.class_block);
        CAPTURE(o.int64_labels);
        const auto dense = ml::forward_backward(policy, c.X, c.W, c.labels);
        for (int ranks : {2, 3}) {
          CAPTURE(ranks);
          const auto r = gt::run_gpu_sharded(policy, problem, ranks, o);
          for (int k = 0; k < ranks; ++k) CHECK(r[static_cast<std::size_t>(k)].error.message == "");
          for (int k = 1; k < ranks; ++k) {
            CHECK(r[static_cast<std::size_t>(k)].loss == r[0].loss);  // identical on every rank
            CHECK(r[static_cast<std::size_t>(k)].dX == r[0].dX);
          }
          CHECK(rel_error(r[0].loss, dense.loss) < 1e-12);
          CHECK(rel_error(as_matrix(r[0].dX, 8, 6), dense.dX) < 1e-12);
          CHECK(rel_error(as_matrix(r[0].dW, 19, 6), dense.dW) < 1e-12);
        }
      }
    });
  }

  TEST_CASE("Sharded split and asynchronous calls (Shard with Execution and Async) equal the CPU's, upstream gradient != 1") {
    const Case c = random_case(8, 6, 19, 4);
    const gt::Problem<double> problem = to_problem<double>(c);
    std::vector<gt::RunOptions> runs(4);
    runs[0].split = true;
    runs[0].grad_loss = 2.5;
    runs[1].split = true;
    runs[1].device_grad = true;
    runs[1].grad_loss = -0.75;
    runs[1].class_block = 2;
    runs[2].async = true;
    runs[2].grad_loss = 2.5;
    runs[2].class_block = 2;
    runs[2].int64_labels = true;
    runs[3].fused_async = true;
    for_each_run<double>(19, runs, SameOptions{}, [&](const auto& policy, const gt::RunOptions& o) {
      using P = std::decay_t<decltype(policy)>;
      if constexpr (!ml::detail::has_learnable_margins<P>::value) {
        CAPTURE(name_of(P::name));
        CAPTURE(o.class_block);
        CAPTURE(o.split);
        CAPTURE(o.device_grad);
        CAPTURE(o.async);
        CAPTURE(o.fused_async);
        ml::Workspace<double> ws;
        Mat<double> dX(8, 6), dW(19, 6);
        const auto fwd = ml::forward(policy, c.X, c.W, c.labels, ws);
        ml::backward(fwd, o.grad_loss, {dX, dW});
        const auto r = gt::run_gpu_sharded(policy, problem, 2, o);
        for (int k = 0; k < 2; ++k) {
          CHECK(r[static_cast<std::size_t>(k)].error.message == "");
          CHECK(r[static_cast<std::size_t>(k)].device_loss_ok);
        }
        CHECK(r[1].loss == r[0].loss);
        CHECK(r[1].dX == r[0].dX);
        CHECK(rel_error(r[0].loss, fwd.loss()) < 1e-12);
        CHECK(rel_error(as_matrix(r[0].dX, 8, 6), dX) < 1e-12);
        CHECK(rel_error(as_matrix(r[0].dW, 19, 6), dW) < 1e-12);
      }
    });
  }

  TEST_CASE("Errors found on the device: the CPU's messages") {
    using F = gt::Fault;
    const Case c = random_case(13, 24, 7, 51);
    const gt::Problem<float> problem = to_problem<float>(c);
    const ml::CosFace<float> policy{30, 0.35f};
    const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
    // Bad inputs: the CPU gets the same fault injected.
    for (F f : {F::label_too_large, F::async_label, F::unchecked_async, F::label_negative, F::zero_x_row, F::nan_in_x,
                F::bad_w_rows}) {
      CAPTURE(static_cast<int>(f));
      CHECK(gpu_message(policy, problem, f) == cpu_message(policy, problem, f));
    }
    const std::string huge_norm = gpu_message(policy, problem, F::huge_x_row);
    CHECK(huge_norm.find("marginloss: X row 1 has norm ") == 0);
    CHECK(huge_norm.find(", outside the supported range [") != std::string::npos);
    {
      ml::Workspace<float> ws;
      // then(fwd) after a forward on ws: the CPU's message.
      auto after_forward = [&](auto&& then) {
        return cpu_message([&] {
          const auto fwd = ml::forward(policy, X, W, c.labels, ws);
          then(fwd);
        });
      };
      const float nan = std::numeric_limits<float>::quiet_NaN();
      Mat<float> dX(13, 24), dW(7, 24);
      const std::string nan_grad = after_forward([&](const auto& fwd) { ml::backward(fwd, nan, {dX, dW}); });
      CHECK(nan_grad != "");
      CHECK(gpu_message(policy, problem, F::nan_grad_host) == nan_grad);
      CHECK(gpu_message(policy, problem, F::nan_grad_device) == nan_grad);
      CHECK(gpu_message(policy, problem, F::nan_grad_device_sync) == nan_grad);
      const std::string twice = after_forward([&](const auto& fwd) {
        ml::backward(fwd, 1.f, {dX, dW});
        ml::backward(fwd, 1.f, {dX, dW});
      });
      CHECK(twice.find("backward() needs a forward() on the same workspace first") != std::string::npos);
      CHECK(gpu_message(policy, problem, F::backward_twice) == twice);
      // A backward after another forward on the same workspace (the buffers now hold the later
      // forward's): the CPU's message, and the later forward's backward still runs.
      const std::string stale = cpu_message([&] {
        const auto first = ml::forward(policy, X, W, c.labels, ws);
        const auto second = ml::forward(policy, X, W, c.labels, ws);
        try {
          ml::backward(first, 1.f, {dX, dW});
        } catch (const ml::invalid_argument&) {
          ml::backward(second, 1.f, {dX, dW});
          throw;
        }
      });
      CHECK(stale.find("backward() got a forward whose workspace has since run another forward()") != std::string::npos);
      CHECK(gpu_message(policy, problem, F::stale_forward) == stale);
      Mat<float> dX12(12, 24);
      CHECK(gpu_message(policy, problem, F::dx_shape) == after_forward([&](const auto& fwd) { ml::backward(fwd, 1.f, {dX12, dW}); }));
      // dmargins given to a policy without learnable margins, in backward (the CPU's message but
      // for "null" in place of "empty").
      ml::Vector<float> dmargins(7);
      const std::string unexpected = after_forward([&](const auto& fwd) { ml::backward(fwd, 1.f, {dX, dW, dmargins}); });
      CHECK(unexpected == "marginloss: CosFace has no learnable margins: dmargins must be empty (Gradients{dX, dW})");
      CHECK(gpu_message(policy, problem, F::backward_dmargins_flipped) ==
            "marginloss: CosFace has no learnable margins: dmargins must be empty (Gradients{dX, dW})");
    }
    {
      // Learnable margins without dmargins, in backward.
      const gt::PerClassMargins<float> m(7);
      const ml::AdaptiveMargin<float> adaptive{30, m.adaptive, 70.f};
      ml::Workspace<float> ws;
      Mat<float> dX(13, 24), dW(7, 24);
      const std::string cpu = cpu_message([&] {
        const auto fwd = ml::forward(adaptive, X, W, c.labels, ws);
        ml::backward(fwd, 1.f, {dX, dW});
      });
      const std::string head = "marginloss: AdaptiveMargin has learnable margins: pass Gradients{dX, dW, dmargins} (C entries";
      CHECK(cpu.find(head) == 0);
      CHECK(gpu_message(adaptive, problem, F::backward_dmargins_flipped).find(head + ", device memory)") == 0);
    }
    // The loss of an asynchronous forward is on the device: asking the Forward for it throws.
    CHECK(gpu_message(policy, problem, F::async_loss) ==
          "marginloss: the loss of an asynchronous forward (cuda::Async) is on the device: read device_loss() after the "
          "stream, or run the forward with cuda::Execution");
    {
      // A scale whose logits fit in float but whose loss does not.
      const Case t = case_with_targets(kTargets, 16, 40, 52);
      const ml::NormFace<float> huge{3e38f};
      const Mat<float> Xt = t.X.cast<float>(), Wt = t.W.cast<float>();
      const std::string cpu = cpu_message([&] { ml::forward_backward(huge, Xt, Wt, t.labels); });
      CHECK(cpu.find("is not representable") != std::string::npos);
      CHECK(gpu_message(huge, to_problem<float>(t), F::policy_on_device) == cpu);
    }
  }

  TEST_CASE("Run to run: the same call twice gives the same bits (dense, chunked, per-class margins)") {
    const Case c = random_case(64, 96, 3000, 71);
    const gt::PerClassMargins<float> m(3000);
    auto same_bits = [&](const auto& policy, const gt::RunOptions& o) {
      using P = std::decay_t<decltype(policy)>;
      CAPTURE(name_of(P::name));
      CAPTURE(o.class_block);
      const auto a = gt::run_gpu(policy, to_problem<float>(c), o);
      const auto b = gt::run_gpu(policy, to_problem<float>(c), o);
      CHECK(std::memcmp(&a.loss, &b.loss, sizeof a.loss) == 0);
      CHECK((a.dX.size() == b.dX.size() && std::memcmp(a.dX.data(), b.dX.data(), sizeof(float) * a.dX.size()) == 0));
      CHECK((a.dW.size() == b.dW.size() && std::memcmp(a.dW.data(), b.dW.data(), sizeof(float) * a.dW.size()) == 0));
      CHECK((a.dmargins.size() == b.dmargins.size() &&
             std::memcmp(a.dmargins.data(), b.dmargins.data(), sizeof(float) * a.dmargins.size()) == 0));
    };
    for (const gt::RunOptions& o : per_block({0, 700})) {
      same_bits(ml::ArcFace<float>{64, 0.5f}, o);
      same_bits(ml::SphereFace<float>{4, 5.f}, o);
      same_bits(ml::AdaptiveMargin<float>{30, m.adaptive, 70.f}, o);
      same_bits(ml::class_margins(ml::CosFace<float>{30, 0.f}, m.cosine), o);
    }
  }

  TEST_CASE("CurricularFace's tau is updated by the GPU forward as by the CPU's, step after step") {
    const Case c = random_case(21, 16, 97, 81);
    const gt::PerClassMargins<double> m(97);
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
    const gt::Problem<float> problem = to_problem<float>(c);
    const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
    const gt::PerClassMargins<float> m(7);
    // The policy views margins with `value` at class k, on both engines (the GPU's copied to the
    // device).
    auto compare = [&](const auto& make_policy, const std::vector<float>& good, Index k, float value) {
      CAPTURE(k);
      CAPTURE(value);
      std::vector<float> bad = good;
      bad[static_cast<std::size_t>(k)] = value;
      const auto policy = make_policy(bad);
      const std::string cpu = cpu_message([&] { ml::forward_backward(policy, X, W, c.labels); });
      CHECK(cpu.find("margins(" + std::to_string(k) + ")") != std::string::npos);
      for (gt::Fault f : {gt::Fault::policy_on_device, gt::Fault::policy_on_device_async}) {
        CAPTURE(static_cast<int>(f));
        CHECK(gpu_message(policy, problem, f) == cpu);
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
    gt::Problem<float> problem = to_problem<float>(random_case(4, 5, 8, 91));
    gt::inject(gt::Fault::nan_in_second_shard, problem);
    const auto ranks = gt::run_gpu_sharded(ml::CosFace<float>{}, problem, 2, gt::RunOptions{});
    REQUIRE(ranks.size() == 2);
    CHECK(ranks[0].error.message.find("another rank rejected its input") != std::string::npos);
    CHECK(ranks[1].error.message.find("W row 0 contains a non-finite value") != std::string::npos);
  }

  TEST_CASE("Ranks that disagree on the number of classes all throw before any collective of the loss") {
    const gt::Problem<double> problem = to_problem<double>(random_case(4, 5, 9, 92));
    for (const bool split : {false, true}) {
      CAPTURE(split);
      gt::RunOptions o;
      o.disagree_classes = true;
      o.split = split;
      const auto ranks = gt::run_gpu_sharded(ml::ArcFace<double>{}, problem, 3, o);
      REQUIRE(ranks.size() == 3);
      for (const auto& r : ranks) {
        CHECK(r.error.invalid_argument);
        CHECK(r.error.message.find("the ranks disagree on the number of classes: rank 0 has 9, rank 2 has 10") !=
              std::string::npos);
      }
    }
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
