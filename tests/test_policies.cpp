// Policy transforms against closed forms and published reference values; identities between
// policies; numeric extremes.
#include <doctest/doctest.h>

#include "support.hpp"

using namespace mltest;

namespace {
constexpr double pi = 3.141592653589793;

template <typename P>
ml::ValueSlope<double> target(const P& p, double t) {
  return p.row(t, 0).target;
}
}  // namespace

TEST_CASE("ArcFace target against the reference table (references.md §12b)") {
  const ml::ArcFace<double> arc{64, 0.5, ml::Fallback::none};
  const double c[] = {0.9, 0.5, 0.0, -0.5, -0.9};
  const double value[] = {0.580848, 0.023597, -0.479426, -0.853986, -0.998801};
  const double slope[] = {1.867472, 1.154379, 0.877583, 0.600786, -0.112307};
  for (int k = 0; k < 5; ++k) {
    CAPTURE(c[k]);
    CHECK(target(arc, c[k]).value == doctest::Approx(value[k]).epsilon(2e-6));
    CHECK(target(arc, c[k]).slope == doctest::Approx(slope[k]).epsilon(2e-6));
  }
}

TEST_CASE("ArcFace fallbacks") {
  const double m = 0.5, th = std::cos(pi - m);
  const ml::ArcFace<double> hard{64, m};
  // Hard threshold: t - m sin m at and below cos(pi - m) (the jump to -1.1172953 at m = 0.5).
  CHECK(target(hard, th).value == doctest::Approx(-1.1172953).epsilon(1e-7));
  CHECK(target(hard, th).slope == 1.0);
  CHECK(target(hard, th + 1e-9).value == doctest::Approx(-1.0).epsilon(1e-6));
  CHECK(target(ml::ArcFace<double>{64, 0.35}, std::cos(pi - 0.35)).value == doctest::Approx(-1.0593869).epsilon(1e-7));
  // Easy margin: the plain cosine for t <= 0.
  const ml::ArcFace<double> easy{64, m, ml::Fallback::easy_margin};
  CHECK(target(easy, -0.3).value == -0.3);
  CHECK(target(easy, 0.3).value == doctest::Approx(std::cos(std::acos(0.3) + m)));
  // None: the non-monotone region keeps its negative slope.
  CHECK(target(ml::ArcFace<double>{64, m, ml::Fallback::none}, -0.9).slope < 0);
  // Straight-through: same value, slope 1.
  const ml::ArcFace<double> st{64, m, ml::Fallback::hard_threshold, ml::Gradient::straight_through};
  CHECK(target(st, 0.7).value == target(hard, 0.7).value);
  CHECK(target(st, 0.7).slope == 1.0);
}

TEST_CASE("ArcFace slope stays finite at t = +-1 (guarded sin theta)") {
  for (double t : {1.0, -1.0}) {
    const auto v = target(ml::ArcFace<double>{64, 0.5, ml::Fallback::none}, t);
    CHECK(std::isfinite(v.value));
    CHECK(std::isfinite(v.slope));
    const auto f = ml::ArcFace<float>{64, 0.5f, ml::Fallback::none}.row(static_cast<float>(t), 0).target;
    CHECK(std::isfinite(f.value));
    CHECK(std::isfinite(f.slope));
  }
  // m1 sin(m2) / sin(theta) is unbounded at t = 1 for m2 > 0: large, but finite.
  CHECK(std::isfinite(target(ml::CombinedMargin<double>{64, 1.5, 0.1, 0.05}, 1.0).slope));
  CHECK(std::isfinite(target(ml::CombinedMargin<double>{64, 1.5, 0.1, 0.05}, -1.0).slope));
}

TEST_CASE("SphereFace psi equals (-1)^k cos(m theta) - 2k computed through arccos") {
  for (int m = 1; m <= 5; ++m) {
    const ml::SphereFace<double> sph{m, 0.0};
    for (int g = 0; g <= 360; ++g) {
      const double theta = pi * g / 360.0;
      const double t = std::cos(theta);
      const int k = std::min(m - 1, static_cast<int>(std::floor(m * theta / pi)));
      const double psi = ((k % 2) ? -1.0 : 1.0) * std::cos(m * theta) - 2.0 * k;
      const double dpsi = ((k % 2) ? -1.0 : 1.0) * m * std::sin(m * theta) / std::max(std::sin(theta), 1e-300);
      CAPTURE(m);
      CAPTURE(theta);
      CHECK(target(sph, t).value == doctest::Approx(psi).epsilon(1e-9).scale(1));
      if (g > 0 && g < 360) CHECK(target(sph, t).slope == doctest::Approx(dpsi).epsilon(1e-7).scale(1));
    }
    CHECK(target(sph, -1.0).value == doctest::Approx(1.0 - 2.0 * m));  // psi(pi) = 1 - 2m
    CHECK(target(sph, 1.0).value == doctest::Approx(1.0));
    // At t = -1 the slope is +m^2 (k = m - 1), not the -m^2 of floor(m theta / pi) = m.
    CHECK(target(sph, -1.0).slope == doctest::Approx(static_cast<double>(m * m)));
  }
  // Reference values for m = 4 (references.md §12b).
  const ml::SphereFace<double> s4{4, 0.0};
  CHECK(target(s4, 0.9).value == doctest::Approx(-0.2312));
  CHECK(target(s4, 0.9).slope == doctest::Approx(8.928));
  CHECK(target(s4, -0.5).value == doctest::Approx(-4.5));
  CHECK(target(s4, -0.9).value == doctest::Approx(-5.7688));
}

TEST_CASE("SphereFace lambda blending") {
  const ml::SphereFace<double> s{4, 5.0};
  const ml::SphereFace<double> pure{4, 0.0};
  CHECK(target(s, 0.3).value == doctest::Approx((5 * 0.3 + target(pure, 0.3).value) / 6));
  CHECK(target(s, 0.3).slope == doctest::Approx((5 + target(pure, 0.3).slope) / 6));
}

TEST_CASE("LambdaSchedule reproduces the official annealing") {
  ml::LambdaSchedule sch;
  CHECK(sch.step() == doctest::Approx(1000.0 / 1.12));  // Caffe increments first: lambda(1)
  CHECK(sch.iteration == 1);
  CHECK(sch.lambda_at(1658) == doctest::Approx(5.0010).epsilon(1e-4));
  CHECK(sch.lambda_at(1659) == 5.0);
  CHECK(sch.lambda_at(100000) == 5.0);
  sch.iteration = 1657;
  CHECK(sch.step() == doctest::Approx(5.0010).epsilon(1e-4));
}

TEST_CASE("Identities between policies hold to 1e-12 (double)") {
  Case c = case_with_targets({0.9, 0.4, -0.2, -0.7, -0.95, 0.05}, 6, 9, 7);
  auto same = [&](const auto& a, const auto& b) {
    const auto ra = ml::forward_backward(a, c.X, c.W, c.labels);
    const auto rb = ml::forward_backward(b, c.X, c.W, c.labels);
    CHECK(rel_error(ra.loss, rb.loss) < 1e-12);
    CHECK(rel_error(ra.dX, rb.dX) < 1e-12);
    CHECK(rel_error(ra.dW, rb.dW) < 1e-12);
  };
  same(ml::ArcFace<double>{32, 0.0}, ml::NormFace<double>{32});
  same(ml::CosFace<double>{32, 0.0}, ml::NormFace<double>{32});
  same(ml::CombinedMargin<double>{32, 1, 0, 0}, ml::NormFace<double>{32});
  for (auto fb : {ml::Fallback::hard_threshold, ml::Fallback::easy_margin, ml::Fallback::none})
    same(ml::CombinedMargin<double>{64, 1, 0.5, 0, fb}, ml::ArcFace<double>{64, 0.5, fb});
  same(ml::CombinedMargin<double>{64, 1, 0, 0.35}, ml::CosFace<double>{64, 0.35});
  same(ml::SphereFace<double>{1, 7.0, ml::Scale::fixed, 30}, ml::NormFace<double>{30});
  // Straight-through equals exact where the slope is 1 anyway (CosFace-like target).
  same(ml::CombinedMargin<double>{64, 1, 0, 0.35, ml::Fallback::none, ml::Gradient::straight_through},
       ml::CosFace<double>{64, 0.35});
}

TEST_CASE("Extremes: cosines exactly +-1, C = 1 and 2, B = 1, D = 1, s = 128 in float") {
  auto finite = [](const auto& r) { return std::isfinite(r.loss) && r.dX.allFinite() && r.dW.allFinite(); };
  // x_i equal (and opposite) to its class weight: c = +-1 up to rounding.
  Case c = random_case(4, 5, 3, 8);
  c.labels << 0, 1, 2, 0;
  c.X.row(0) = 3.0 * c.W.row(0);
  c.X.row(1) = -2.0 * c.W.row(1);
  c.X.row(2) = c.W.row(2);
  const Mat<float> Xf = c.X.cast<float>(), Wf = c.W.cast<float>();
  for (auto fb : {ml::Fallback::hard_threshold, ml::Fallback::easy_margin, ml::Fallback::none}) {
    CHECK(finite(ml::forward_backward(ml::ArcFace<double>{64, 0.5, fb}, c.X, c.W, c.labels)));
    CHECK(finite(ml::forward_backward(ml::ArcFace<float>{64, 0.5f, fb}, Xf, Wf, c.labels)));
    CHECK(finite(ml::forward_backward(ml::CombinedMargin<float>{64, 1.5f, 0.1f, 0.05f, fb}, Xf, Wf, c.labels)));
  }
  for (int m = 1; m <= 5; ++m) CHECK(finite(ml::forward_backward(ml::SphereFace<float>{m, 0.f}, Xf, Wf, c.labels)));
  CHECK(finite(ml::forward_backward(ml::ArcFace<float>{128, 0.5f}, Xf, Wf, c.labels)));
  CHECK(finite(ml::forward_backward(ml::CosFace<float>{128, 0.35f}, Xf, Wf, c.labels)));

  // C = 1: the softmax is certain, the loss and every gradient are exactly 0.
  Case one = random_case(3, 4, 1, 9);
  const auto r1 = ml::forward_backward(ml::ArcFace<double>{64, 0.5}, one.X, one.W, one.labels);
  CHECK(r1.loss == 0.0);
  CHECK(r1.dX.isZero(0));
  CHECK(r1.dW.isZero(0));
  // C = 2 and B = 1 against a closed form: L = log(1 + exp(s (c_other - f(t)))).
  Case two = case_with_targets({0.3}, 4, 2, 10);
  const auto r2 = ml::forward_backward(ml::CosFace<double>{16, 0.35}, two.X, two.W, two.labels);
  const double co = two.X.row(0).normalized().dot(two.W.row(1).normalized());
  CHECK(r2.loss == doctest::Approx(std::log1p(std::exp(16 * (co - (0.3 - 0.35))))).epsilon(1e-12));
  // D = 1: every cosine is +-1, the tangent space is empty, dX = dW = 0.
  Mat<double> X1(2, 1), W1(3, 1);
  X1 << 2.0, -0.5;
  W1 << 1.0, -3.0, 0.25;
  Eigen::VectorXi y1(2);
  y1 << 0, 2;
  const auto rd = ml::forward_backward(ml::ArcFace<double>{30, 0.5}, X1, W1, y1);
  CHECK(std::isfinite(rd.loss));
  CHECK(rd.dX.isZero(1e-12));
  CHECK(rd.dW.isZero(1e-12));
}

TEST_CASE("Feature norms from 1e-20 to 1e20 give finite results in float") {
  Case c = random_case(4, 6, 5, 11);
  Mat<float> X = c.X.cast<float>(), W = c.W.cast<float>();
  X.row(0) *= 1e-20f;
  X.row(1) *= 1e20f;
  W.row(2) *= 1e-20f;
  W.row(3) *= 1e20f;
  const auto r = ml::forward_backward(ml::ArcFace<float>{64, 0.5f}, X, W, c.labels);
  CHECK(std::isfinite(r.loss));
  CHECK(r.dX.allFinite());
  CHECK(r.dW.allFinite());
  // The same in double agrees with the unscaled problem (the loss is scale-invariant).
  Mat<double> Xd = c.X, Wd = c.W;
  Xd.row(0) *= 1e-20;
  Xd.row(1) *= 1e20;
  const auto a = ml::forward_backward(ml::ArcFace<double>{64, 0.5}, Xd, Wd, c.labels);
  const auto b = ml::forward_backward(ml::ArcFace<double>{64, 0.5}, c.X, c.W, c.labels);
  CHECK(a.loss == doctest::Approx(b.loss).epsilon(1e-12));
}
