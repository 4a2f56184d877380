// Reproducibility: identical inputs give identical bits run to run at a fixed thread count,
// and what changes with the thread count is bounded.
//
// What depends on the number of OpenMP threads, and why:
//   - the engine splits the classes into tiles whose size does not depend on the thread count;
//     each tile's products, row pass and dW rows are computed by one thread in a fixed order,
//     and the per-tile (max, sum) pairs are merged in tile order: the cosines, the loss and dW
//     are bit-identical whatever the thread count;
//   - dX sums one partial product per thread, so its summation order (and last bits) follow
//     the thread count;
//   - the cosine-level entry point has no products; its dL/dcos is computed row by row
//     (independent), its loss is an OpenMP reduction in double (order depends on the threads).
// The bounds below are relative to the largest entry of each array: 1e-5 in float, 1e-13 in
// double; the measured differences are far smaller (see the MESSAGEs in verbose mode).
#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <string>

#include "../support.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace mltest;

namespace {

// A problem large enough for Eigen to parallelise its products and to use several blocks.
template <typename T>
struct Problem {
  Mat<T> X, W;
  Eigen::VectorXi labels;
};

template <typename T>
Problem<T> problem(Index B, Index D, Index C, std::uint64_t seed) {
  const Case c = random_case(B, D, C, seed);
  return {c.X.cast<T>(), c.W.cast<T>(), c.labels};
}

// Calls f once per policy of the library, for scalar type T.
template <typename T, typename F>
void for_each_policy(F&& f) {
  f("NormFace", ml::NormFace<T>{T(20)});
  f("CosFace", ml::CosFace<T>{T(64), T(0.35)});
  f("CosFace conditional", ml::CosFace<T>{T(30), T(0.35), true});
  f("ArcFace", ml::ArcFace<T>{T(64), T(0.5)});
  f("ArcFace straight-through", ml::ArcFace<T>{T(64), T(0.5), ml::Fallback::none, ml::Gradient::straight_through});
  f("CombinedMargin", ml::CombinedMargin<T>{T(64), T(0.9), T(0.4), T(0.15), ml::Fallback::hard_threshold});
  f("SphereFace feature norm", ml::SphereFace<T>{4, T(5)});
  f("SphereFace fixed", ml::SphereFace<T>{3, T(0), ml::Scale::fixed, T(30)});
}

#if defined(_OPENMP)
// Sets the OpenMP thread count for the scope (Eigen reads omp_get_max_threads()).
struct ThreadCount {
  int saved;
  explicit ThreadCount(int n) : saved(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
};
#endif

template <typename T>
double tolerance() {
  return sizeof(T) == 4 ? 1e-5 : 1e-13;
}

template <typename T>
void bits_run_to_run() {
  const auto p = problem<T>(96, 80, 300, 101);
  for_each_policy<T>([&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    const auto first = ml::forward_backward(policy, p.X, p.W, p.labels);
    ml::Workspace<T> ws;
    Mat<T> dX(p.X.rows(), p.X.cols()), dW(p.W.rows(), p.W.cols());
    Mat<T> gX(p.X.rows(), p.X.cols()), gW(p.W.rows(), p.W.cols());  // the split form's own outputs
    for (int run = 0; run < 3; ++run) {
      const auto again = ml::forward_backward(policy, p.X, p.W, p.labels);
      CHECK(same_bits_scalar(again.loss, first.loss));
      CHECK(same_bits(again.dX, first.dX));
      CHECK(same_bits(again.dW, first.dW));
      // The workspace form, reused across runs, and the split form give the same bits.
      const T loss = ml::forward_backward(policy, p.X, p.W, p.labels, {dX, dW}, ws);
      CHECK(same_bits_scalar(loss, first.loss));
      CHECK(same_bits(dX, first.dX));
      CHECK(same_bits(dW, first.dW));
      const auto fwd = ml::forward(policy, p.X, p.W, p.labels, ws);
      CHECK(same_bits_scalar(fwd.loss(), first.loss));
      gX.setConstant(std::numeric_limits<T>::quiet_NaN());
      gW.setConstant(std::numeric_limits<T>::quiet_NaN());
      ml::backward(fwd, T(1), {gX, gW});
      CHECK(same_bits(gX, first.dX));
      CHECK(same_bits(gW, first.dW));
    }
  });
}

}  // namespace

TEST_CASE("Identical inputs give identical bits run to run (float)") { bits_run_to_run<float>(); }
TEST_CASE("Identical inputs give identical bits run to run (double)") { bits_run_to_run<double>(); }

TEST_CASE("A workspace that held a larger problem gives the same bits as a fresh one") {
  const auto big = problem<float>(40, 24, 70, 102);
  const auto small = problem<float>(7, 24, 11, 103);
  const ml::ArcFace<float> arc{64, 0.5f};
  const auto fresh = ml::forward_backward(arc, small.X, small.W, small.labels);
  ml::Workspace<float> ws;
  Mat<float> dXb(big.X.rows(), big.X.cols()), dWb(big.W.rows(), big.W.cols());
  Mat<float> dX(small.X.rows(), small.X.cols()), dW(small.W.rows(), small.W.cols());
  ml::forward_backward(arc, big.X, big.W, big.labels, {dXb, dWb}, ws);
  const float loss = ml::forward_backward(arc, small.X, small.W, small.labels, {dX, dW}, ws);
  CHECK(same_bits_scalar(loss, fresh.loss));
  CHECK(same_bits(dX, fresh.dX));
  CHECK(same_bits(dW, fresh.dW));
}

TEST_CASE("Cosine level: identical inputs give identical bits run to run") {
  const auto p = problem<double>(50, 8, 200, 104);
  Mat<double> cos = (p.X.rowwise().normalized() * p.W.rowwise().normalized().transpose()).eval();
  const ml::ArcFace<double> arc{64, 0.5};
  const auto first = ml::cosine_forward_backward(arc, cos, p.labels);
  for (int run = 0; run < 3; ++run) {
    const auto again = ml::cosine_forward_backward(arc, cos, p.labels);
    CHECK(same_bits_scalar(again.loss, first.loss));
    CHECK(same_bits(again.dcos, first.dcos));
  }
}

#if defined(_OPENMP)

namespace {

template <typename T>
using Result1 = ml::Result<T>;

template <typename P, typename Pr>
ml::Result<typename P::value_type> run_once(const P& policy, const Pr& p) {
  return ml::forward_backward(policy, p.X, p.W, p.labels);
}

template <typename T>
void thread_count_bound() {
  // 512 classes: 8 tiles of 64, several per thread.
  const auto p = problem<T>(128, 256, 512, 105);
  for_each_policy<T>([&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    Result1<T> one, two;
    {
      ThreadCount t(1);
      one = run_once(policy, p);
    }
    {
      ThreadCount t(2);
      two = run_once(policy, p);
    }
    const double dl = rel_error(static_cast<double>(two.loss), static_cast<double>(one.loss));
    const double dx = rel_error(two.dX.template cast<double>(), one.dX.template cast<double>());
    const double dw = rel_error(two.dW.template cast<double>(), one.dW.template cast<double>());
    MESSAGE(name, std::string(sizeof(T) == 4 ? " float" : " double"), ": 1 vs 2 threads, relative difference loss ", dl,
            ", dX ", dx, ", dW ", dw);
    CHECK(same_bits_scalar(two.loss, one.loss));
    CHECK(dx <= tolerance<T>());
    CHECK(same_bits(two.dW, one.dW));
    // At a fixed thread count, the bits do not change.
    {
      ThreadCount t(2);
      const auto again = run_once(policy, p);
      CHECK(same_bits_scalar(again.loss, two.loss));
      CHECK(same_bits(again.dX, two.dX));
      CHECK(same_bits(again.dW, two.dW));
    }
  });
}

}  // namespace

TEST_CASE("1 vs 2 OpenMP threads: loss and dW bit-identical, dX within 1e-5 relative (float)") { thread_count_bound<float>(); }
TEST_CASE("1 vs 2 OpenMP threads: loss and dW bit-identical, dX within 1e-13 relative (double)") { thread_count_bound<double>(); }

TEST_CASE("1 vs 2 OpenMP threads at the cosine level: dcos bit-identical, loss bounded") {
  const auto p = problem<double>(257, 8, 300, 106);
  const Mat<double> cos = (p.X.rowwise().normalized() * p.W.rowwise().normalized().transpose()).eval();
  const Mat<float> cosf = cos.cast<float>();
  const ml::CombinedMargin<double> comb{64, 1, 0.3, 0.2};
  const ml::CombinedMargin<float> combf{64, 1, 0.3f, 0.2f};
  ml::CosineResult<double> one, two;
  ml::CosineResult<float> onef, twof;
  {
    ThreadCount t(1);
    one = ml::cosine_forward_backward(comb, cos, p.labels);
    onef = ml::cosine_forward_backward(combf, cosf, p.labels);
  }
  {
    ThreadCount t(2);
    two = ml::cosine_forward_backward(comb, cos, p.labels);
    twof = ml::cosine_forward_backward(combf, cosf, p.labels);
  }
  // Row-independent: the same bits whatever the thread count.
  CHECK(same_bits(one.dcos, two.dcos));
  CHECK(same_bits(onef.dcos, twof.dcos));
  // The batch loss is an OpenMP reduction (in double): its summation order follows the threads.
  MESSAGE("cosine level loss, 1 vs 2 threads: double ", rel_error(two.loss, one.loss), ", float ",
          rel_error(static_cast<double>(twof.loss), static_cast<double>(onef.loss)));
  CHECK(rel_error(two.loss, one.loss) <= 1e-13);
  CHECK(rel_error(static_cast<double>(twof.loss), static_cast<double>(onef.loss)) <= 1e-6);
}

#endif  // _OPENMP
