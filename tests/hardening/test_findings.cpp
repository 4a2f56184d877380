// Regression tests for inputs the library once mishandled (found by fuzz_entry_points.cpp and
// the extreme-value tests). Each test states the contract it checks: the call either returns
// finite results or throws marginloss::invalid_argument.
#include <doctest/doctest.h>

#include <marginloss/sampling/adaptive_sampler.hpp>

#include <cstdint>
#include <limits>

#include "../support.hpp"

using namespace mltest;

namespace {

// True when the call threw marginloss::invalid_argument, or returned finite results.
template <typename F>
bool finite_or_rejected(F&& call) {
  try {
    return call();
  } catch (const ml::invalid_argument&) {
    return true;
  }
}

template <typename R>
bool finite(const R& r) {
  return std::isfinite(r.loss) && r.dX.allFinite() && r.dW.allFinite();
}

}  // namespace

// Labels of an unsigned 64-bit type (e.g. from a uint64 tensor) above INT64_MAX once passed
// the range check `y >= 0 && static_cast<Index>(y) < C` (the cast is negative) and were used
// as row -1 of W: an out-of-bounds read. They must be rejected with a message naming them.
TEST_CASE("uint64 labels >= 2^63 are rejected (dense and cosine level)") {
  const Case c = random_case(3, 4, 5, 401);
  Eigen::Matrix<std::uint64_t, Eigen::Dynamic, 1> y(3);
  y << 0, ~std::uint64_t(0), 2;
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(ml::NormFace<double>{}, c.X, c.W, y),
                       doctest::Contains("labels[1] = 18446744073709551615"), ml::invalid_argument);
  const Mat<double> cos = Mat<double>::Constant(3, 5, 0.25);
  CHECK_THROWS_AS((void)ml::cosine_forward_backward(ml::NormFace<double>{}, cos, y), ml::invalid_argument);
  y(1) = 4;
  CHECK_NOTHROW((void)ml::forward_backward(ml::NormFace<double>{}, c.X, c.W, y));
}

// Hyper-parameters that validate() accepts but whose logits overflow T: the loss is +inf
// (no error). Either validate() bounds them (e.g. s * (1 + m + m3 + ...) must stay well
// below the largest T), or the result must stay finite.
TEST_CASE("Margins that overflow the logits are rejected or give finite results") {
  const Case c = random_case(3, 4, 5, 402);
  const Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
  CHECK(finite_or_rejected([&] { return finite(ml::forward_backward(ml::CosFace<float>{64, 1e37f}, X, W, c.labels)); }));
  CHECK(finite_or_rejected(
      [&] { return finite(ml::forward_backward(ml::CombinedMargin<float>{64, 1, 0.3f, 1e37f}, X, W, c.labels)); }));
  CHECK(finite_or_rejected(
      [&] { return finite(ml::forward_backward(ml::NormFace<double>{std::numeric_limits<double>::max()}, c.X, c.W, c.labels)); }));
  CHECK(finite_or_rejected([&] { return finite(ml::forward_backward(ml::NormFace<float>{1e38f}, X, W, c.labels)); }));
}

// Gradients whose exact value does not fit in T (|dL/dw| ~ s / |w| with |w| at the bottom of
// the accepted norm range, or an upstream gradient near the largest T) come back as inf/NaN.
TEST_CASE("Gradients that overflow T are rejected or finite") {
  const Case c = random_case(3, 4, 5, 403);
  Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
  W.row(1) *= 1e-29f;  // |w_1| about 1e-29, inside [2^-100, 2^100]
  CHECK(finite_or_rejected([&] { return finite(ml::forward_backward(ml::NormFace<float>{1e10f}, X, W, c.labels)); }));
  ml::Workspace<double> ws;
  const ml::ArcFace<double> arc{64, 0.5};
  CHECK(finite_or_rejected([&] {
    const auto fwd = ml::forward(arc, c.X, c.W, c.labels, ws);
    Mat<double> dX = Mat<double>::Constant(c.X.rows(), c.X.cols(), std::numeric_limits<double>::quiet_NaN());
    Mat<double> dW = Mat<double>::Constant(c.W.rows(), c.W.cols(), std::numeric_limits<double>::quiet_NaN());
    ml::backward(fwd, 1e307, {dX, dW});
    return std::isfinite(fwd.loss()) && dX.allFinite() && dW.allFinite();
  }));
}

// SphereFace with the feature-norm scale, float, |x| = 1e20 and |w| = 1e-20 (both inside the
// accepted norm range and inside the README's "1e-20 to 1e20" claim): dX and dW come back NaN.
// The exact dX is O(1); the exact dW is about |x| / |w| = 1e40 (not representable in float),
// so the call should throw (or the engine should avoid forming dL/dc / |w| = 1e40 for dX).
TEST_CASE("SphereFace feature norm, float, |x| = 1e20 and |w| = 1e-20: finite or rejected") {
  Case c = random_case(3, 4, 5, 404);
  c.labels << 0, 1, 2;
  Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
  X.row(0) *= 1e20f / X.row(0).norm();
  W.row(3) *= 1e-20f / W.row(3).norm();
  CHECK(finite_or_rejected([&] { return finite(ml::forward_backward(ml::SphereFace<float>{4, 5.f}, X, W, c.labels)); }));
  // The same in double with |x| = 2^900 and |w| = 2^-900.
  Mat<double> Xd = c.X, Wd = c.W;
  Xd.row(0) *= 0x1p900 / Xd.row(0).norm();
  Wd.row(3) *= 0x1p-900 / Wd.row(3).norm();
  CHECK(finite_or_rejected([&] { return finite(ml::forward_backward(ml::SphereFace<double>{4, 5.0}, Xd, Wd, c.labels)); }));
}

// ArcFace (and the combined margin) in double with the target cosine exactly 1 and a class
// weight near the bottom of the accepted norm range: the floored slope 1/sin(theta) = 1e12
// times 1/|w| = 2^990 overflows dL/dc / |w| (detail/row_pass.hpp span_gradient, stored in the
// workspace's cosine buffer by DenseEngine::backward), and the projections then give NaN,
// although every exact gradient here is 0 (x is parallel to both class weights). Found by the
// fuzzer (ArcFace<double> s = 45, m = 0.5625, |x| ~ 2^-996, t = 1).
TEST_CASE("ArcFace, double, t = 1 and |w| = 2^-990: finite gradients") {
  Mat<double> X(1, 3), W(2, 3);
  X << 0.5, -1.0, -1.0;
  W.row(0) = 0x1p-990 * X.row(0);
  W.row(1) = X.row(0);  // another class at c = 1: the target's p - 1 is about -1
  Eigen::VectorXi y(1);
  y << 0;
  CHECK(finite_or_rejected([&] { return finite(ml::forward_backward(ml::ArcFace<double>{64, 0.5}, X, W, y)); }));
}

// AdaptiveSampler(N) doubled its sum tree's leaf count up to N: for N > 2^62 (INT64_MAX, say)
// the doubling overflowed Index (signed overflow, undefined behaviour) before anything was
// allocated. Found with the fuzzer's sampler sizes (N = INT64_MAX). Sizes whose tree cannot be
// held are rejected.
TEST_CASE("AdaptiveSampler rejects num_samples too large for its sum tree") {
  constexpr Index max = std::numeric_limits<Index>::max();
  for (const Index n : {max, (Index(1) << 62) + 1, max / 4 / Index(sizeof(double)) + 1}) {
    CAPTURE(n);
    CHECK_THROWS_WITH_AS((void)ml::AdaptiveSampler(n, 0), doctest::Contains("num_samples"), ml::invalid_argument);
  }
}

// AdaptiveSampler accepted any finite cap, but the total weight, the sum of up to N weights at
// cap, overflowed: with cap = DBL_MAX and two of three weights set to 1e308 the total was inf,
// every probability() 0 and every draw returned the last sample. Found with the fuzzer's
// sampler settings (cap = DBL_MAX) and its total_weight() invariant. A cap
// whose N-fold sum is not finite is rejected; one that fits keeps the total finite.
TEST_CASE("AdaptiveSampler rejects a cap whose total over N samples overflows") {
  ml::AdaptiveSamplerOptions o;
  o.cap = std::numeric_limits<double>::max();
  CHECK_THROWS_WITH_AS((void)ml::AdaptiveSampler(3, 0, o), doctest::Contains("cap"), ml::invalid_argument);
  o.cap = 1e300;
  ml::AdaptiveSampler s(3, 0, o);
  s.set_weight(0, 1e308);
  s.set_weight(1, 1e308);
  CHECK(std::isfinite(s.total_weight()));
  for (Index n = 0; n < 3; ++n) CHECK(s.probability(n) > 0);
}
