// The documented allocation-free paths allocate nothing after their first step: every heap
// allocation of the process is counted by a replaced global operator new. A training loop that
// keeps its Workspace and output buffers -- dense or chunked, with a CurricularFace tau update
// from target_cosines into a caller's vector, with learnable margins, on an active-class subset
// of fixed size -- allocates nothing from the second step on.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>

#include <marginloss/sampling/subset.hpp>

#include "../support.hpp"

namespace {
std::atomic<long> g_allocations{0};
}

void* operator new(std::size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

using namespace mltest;

namespace {

// Allocations made by `step` on its second and third calls (the first sizes the buffers).
template <typename F>
long allocations_after_first(F&& step) {
  step();
  const long before = g_allocations.load();
  step();
  step();
  return g_allocations.load() - before;
}

}  // namespace

TEST_CASE("a training step with a kept Workspace allocates nothing after the first") {
  const Case c = random_case(32, 16, 300, 601);
  const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
  Mat<float> dX(32, 16), dW(300, 16);
  for (const ml::Index block : {ml::Index(0), ml::Index(64)}) {
    ml::Options o;
    o.class_block = block;
    ml::Workspace<float> ws;
    CHECK(allocations_after_first([&] {
            (void)ml::forward_backward(ml::ArcFace<float>{}, X, W, c.labels, {dX, dW}, ws, o);
          }) == 0);
    // CurricularFace: tau updated by the forward (the default), or by the caller (data parallel).
    ml::CurricularFace<float> updating{};
    CHECK(allocations_after_first([&] { (void)ml::forward_backward(updating, X, W, c.labels, {dX, dW}, ws, o); }) == 0);
    ml::CurricularFace<float> cf{};
    cf.update_tau_in_forward = false;
    ml::Vector<float> t(32);
    CHECK(allocations_after_first([&] {
            ml::target_cosines(X, W, c.labels, t);
            cf.update_tau(t);
            (void)ml::forward_backward(cf, X, W, c.labels, {dX, dW}, ws, o);
          }) == 0);
    // Learnable margins: the policy views the caller's vector, which the step updates in place.
    ml::Vector<float> margins = ml::Vector<float>::Constant(300, 0.3f);
    const ml::AdaptiveMargin<float> am{30, margins};
    ml::Vector<float> dm(300);
    CHECK(allocations_after_first([&] {
            (void)ml::forward_backward(am, X, W, c.labels, {dX, dW, dm}, ws, o);
            margins -= 0.01f * dm;
            ml::project_margins(margins);
          }) == 0);
    const auto cm = ml::class_margins(ml::ArcFace<float>{}, margins);
    CHECK(allocations_after_first([&] { (void)ml::forward_backward(cm, X, W, c.labels, {dX, dW}, ws, o); }) == 0);
    CHECK(allocations_after_first([&] {
            const auto fwd = ml::forward(ml::SphereFace<float>{}, X, W, c.labels, ws, o);
            ml::backward(fwd, 1.0f, {dX, dW});
          }) == 0);
  }
}

// One plan (detail/plan.hpp) sizes Workspace::reserve, Workspace::bytes_required and the engine's
// buffers: after reserve() even the first step allocates nothing, and the reserved buffers hold
// at most bytes_required.
TEST_CASE("after Workspace::reserve the first step allocates nothing, dense and in blocks") {
  const Case c = random_case(32, 16, 300, 603);
  const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
  Mat<float> dX(32, 16), dW(300, 16);
  {
    // The product library's once-per-process set-up happens before counting: oneDNN generates
    // its GEMM kernels on its first call (34,733 operator new calls measured, never again).
    ml::Workspace<float> warm;
    (void)ml::forward_backward(ml::ArcFace<float>{}, X, W, c.labels, {dX, dW}, warm);
  }
  for (const ml::Index block : {ml::Index(0), ml::Index(300), ml::Index(64), ml::Index(7)}) {
    ml::Options o;
    o.class_block = block;
    ml::Workspace<float> ws;
    ws.reserve(32, 16, 300, block);
    const long before = g_allocations.load();
    const auto fwd = ml::forward(ml::ArcFace<float>{}, X, W, c.labels, ws, o);
    const float loss = fwd.loss();
    ml::backward(fwd, 1.0f, {dX, dW});
    (void)ml::forward_backward(ml::SphereFace<float>{}, X, W, c.labels, {dX, dW}, ws, o);
    CHECK(g_allocations.load() - before == 0);
    CHECK(std::isfinite(loss));
    // The plan's byte count is what a step of that shape needs, not a loose bound: a block of 7
    // classes needs far less than the dense path.
    if (block == 7)
      CHECK(ml::Workspace<float>::bytes_required(32, 16, 300, 7) < ml::Workspace<float>::bytes_required(32, 16, 300, 300));
  }
}

TEST_CASE("the subset loss with a kept SubsetWorkspace allocates nothing after the first step") {
  const Case c = random_case(8, 16, 300, 602);
  const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
  Mat<float> dX(8, 16), dW(300, 16);
  Eigen::VectorXi active(20), local(8);
  for (int a = 0; a < 20; ++a) active(a) = 7 * a + 3;
  for (int i = 0; i < 8; ++i) local(i) = (3 * i) % 20;
  const ml::ActiveSet set{active.cast<ml::Index>(), local.cast<ml::Index>()};
  ml::SubsetWorkspace<float> sws;
  CHECK(allocations_after_first([&] {
          (void)ml::forward_backward(ml::CosFace<float>{}, X, W, set, {dX, dW}, sws);
        }) == 0);
  // Per-class margins: the subset re-points the policy's view at margins gathered into `sws`.
  const ml::Vector<float> margins = ml::Vector<float>::Constant(300, 0.3f);
  ml::Vector<float> dm(300);
  for (const auto scope : {ml::RegulariserScope::all_classes, ml::RegulariserScope::batch_classes})
    for (const auto reg : {ml::SubsetRegulariser::as_policy, ml::SubsetRegulariser::active_classes}) {
      ml::SubsetOptions o;
      o.regulariser = reg;
      const ml::AdaptiveMargin<float> am{30, margins, 70, scope};
      CHECK(allocations_after_first([&] { (void)ml::forward_backward(am, X, W, set, {dX, dW, dm}, sws, o); }) == 0);
    }
  const auto cm = ml::class_margins(ml::CosFace<float>{}, margins);
  CHECK(allocations_after_first([&] { (void)ml::forward_backward(cm, X, W, set, {dX, dW}, sws); }) == 0);
}
