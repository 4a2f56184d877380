// Analytic gradients against central finite differences in double, on the raw X and W.
#include <doctest/doctest.h>

#include <string>

#include "support.hpp"

using namespace mltest;

namespace {

template <typename P>
void check_fd(const P& policy, Case c, double tol = 1e-6) {
  const auto r = ml::forward_backward(policy, c.X, c.W, c.labels);
  REQUIRE(std::isfinite(r.loss));
  auto loss = [&] { return ml::forward_backward(policy, c.X, c.W, c.labels).loss; };
  const Mat<double> gx = fd_gradient(c.X, loss);
  const Mat<double> gw = fd_gradient(c.W, loss);
  CHECK(rel_error(r.dX, gx) < tol);
  CHECK(rel_error(r.dW, gw) < tol);
}

// Target cosines on both sides of every switch of the policies below, kept >= 1e-3 away.
const std::vector<double> spread = {0.95, 0.6, 0.1, -0.3, -0.8, -0.95, 0.3, -0.05};

}  // namespace

TEST_CASE("NormFace gradient") {
  check_fd(ml::NormFace<double>{16}, random_case(5, 6, 7, 1));
  check_fd(ml::NormFace<double>{16}, case_with_targets(spread, 5, 11, 2));
}

TEST_CASE("CosFace gradient, plain and conditional margin") {
  check_fd(ml::CosFace<double>{30, 0.35}, random_case(5, 6, 7, 3));
  check_fd(ml::CosFace<double>{64, 0.4}, case_with_targets(spread, 5, 11, 4));
  check_fd(ml::CosFace<double>{30, 0.35, true}, case_with_targets(spread, 5, 11, 5));
}

TEST_CASE("ArcFace exact gradient on both sides of every fallback") {
  for (auto fb : {ml::Fallback::hard_threshold, ml::Fallback::easy_margin, ml::Fallback::none}) {
    CAPTURE(std::string(ml::to_string(fb)));
    check_fd(ml::ArcFace<double>{64, 0.5, fb}, case_with_targets(spread, 6, 10, 6));
    check_fd(ml::ArcFace<double>{32, 0.35, fb}, case_with_targets(spread, 5, 9, 7));
  }
}

TEST_CASE("ArcFace exact gradient with target cosines near +1 and -1") {
  const std::vector<double> near_one = {0.99999, 0.9999, -0.9999, -0.99999};
  check_fd(ml::ArcFace<double>{64, 0.5, ml::Fallback::none}, case_with_targets(near_one, 5, 6, 8), 2e-6);
  check_fd(ml::ArcFace<double>{64, 0.5}, case_with_targets(near_one, 5, 6, 9), 2e-6);
}

TEST_CASE("Combined margin gradient") {
  check_fd(ml::CombinedMargin<double>{64, 1, 0.3, 0.2}, case_with_targets(spread, 6, 10, 10));
  check_fd(ml::CombinedMargin<double>{64, 0.9, 0.4, 0.15}, case_with_targets(spread, 6, 10, 11));
  // m1 > 1: the hard threshold moves to theta = (pi - m2)/m1 = 1.03 rad (t = 0.51).
  const std::vector<double> around = {0.9, 0.6, 0.45, 0.2, -0.5, -0.9};
  check_fd(ml::CombinedMargin<double>{30, 1.5, 0.1, 0.05}, case_with_targets(around, 6, 8, 12));
  check_fd(ml::CombinedMargin<double>{30, 1.5, 0.1, 0.05, ml::Fallback::hard_threshold},
           case_with_targets(around, 6, 8, 13));
}

TEST_CASE("SphereFace gradient on every piece k, both scale modes, with and without lambda") {
  for (int m = 1; m <= 5; ++m) {
    // One target in the middle of each piece [k pi/m, (k+1) pi/m], plus two random rows.
    std::vector<double> targets;
    for (int k = 0; k < m; ++k) targets.push_back(std::cos((k + 0.5) * 3.141592653589793 / m));
    targets.push_back(0.77);
    targets.push_back(-0.41);
    for (double lambda : {0.0, 5.0}) {
      for (auto mode : {ml::Scale::feature_norm, ml::Scale::fixed}) {
        CAPTURE(m);
        CAPTURE(lambda);
        CAPTURE(mode == ml::Scale::fixed);
        check_fd(ml::SphereFace<double>{m, lambda, mode, 30}, case_with_targets(targets, 7, 9, 20 + m));
      }
    }
  }
}

TEST_CASE("Straight-through gradient: dL/dcos uses slope 1 with the margined probabilities") {
  // Independent check at the cosine level: softmax of the margined logits computed here.
  const Index B = 3, C = 4;
  Mat<double> cos(B, C);
  cos << 0.7, -0.2, 0.1, 0.3, -0.6, 0.2, 0.5, -0.1, 0.05, 0.9, -0.95, 0.4;
  Eigen::VectorXi y(B);
  y << 0, 2, 2;
  const double s = 64, m = 0.5;
  for (auto fb : {ml::Fallback::none, ml::Fallback::hard_threshold}) {
    const auto r = ml::cosine_forward_backward(ml::ArcFace<double>{s, m, fb, ml::Gradient::straight_through}, cos, y);
    double loss = 0;
    for (Index i = 0; i < B; ++i) {
      Eigen::VectorXd z = s * cos.row(i).transpose();
      const double t = cos(i, y(i));
      const bool fall = fb == ml::Fallback::hard_threshold && t <= std::cos(3.141592653589793 - m);
      z(y(i)) = s * (fall ? t - m * std::sin(m) : std::cos(std::acos(t) + m));
      const double mx = z.maxCoeff();
      const double lse = mx + std::log((z.array() - mx).exp().sum());
      loss += (lse - z(y(i))) / B;
      for (Index j = 0; j < C; ++j) {
        const double p = std::exp(z(j) - lse);
        CHECK(r.dcos(i, j) == doctest::Approx(s * (p - (j == y(i))) / B).epsilon(1e-12));
      }
    }
    CHECK(r.loss == doctest::Approx(loss).epsilon(1e-12));
  }
}

TEST_CASE("Cosine-level gradient against finite differences, including dL/dscales") {
  Case c = case_with_targets({0.8, 0.2, -0.4, -0.9}, 5, 6, 30);
  Mat<double> cos = (c.X.rowwise().normalized() * c.W.rowwise().normalized().transpose()).eval();
  Eigen::VectorXd scales = c.X.rowwise().norm();
  const ml::ArcFace<double> arc{30, 0.5};
  auto r = ml::cosine_forward_backward(arc, cos, c.labels);
  auto f = [&] { return ml::cosine_forward_backward(arc, cos, c.labels).loss; };
  CHECK(rel_error(r.dcos, fd_gradient(cos, f, 1e-7)) < 1e-6);

  const ml::SphereFace<double> sph{4, 5.0};
  Mat<double> dcos(cos.rows(), cos.cols());
  Eigen::VectorXd dscales(cos.rows());
  ml::cosine_forward_backward(sph, cos, c.labels, scales, dcos, dscales);
  Mat<double> dummy(cos.rows(), cos.cols());
  Eigen::VectorXd dummy_s(cos.rows());
  auto g = [&] { return ml::cosine_forward_backward(sph, cos, c.labels, scales, dummy, dummy_s); };
  CHECK(rel_error(dcos, fd_gradient(cos, g, 1e-7)) < 1e-6);
  Mat<double> scales_m = scales.transpose();
  auto h = [&] {
    Eigen::VectorXd sv = scales_m.transpose();
    return ml::cosine_forward_backward(sph, cos, c.labels, sv, dummy, dummy_s);
  };
  const Mat<double> fd_s = fd_gradient(scales_m, h);
  CHECK(rel_error(dscales.transpose(), fd_s) < 1e-6);
}

TEST_CASE("Split forward/backward equals forward_backward and scales with the upstream gradient") {
  Case c = random_case(6, 8, 9, 40);
  const ml::ArcFace<double> p{64, 0.5};
  const auto r = ml::forward_backward(p, c.X, c.W, c.labels);
  ml::Workspace<double> ws;
  const auto fwd = ml::forward(p, c.X, c.W, c.labels, ws);
  const double loss = fwd.loss();
  CHECK(ws.holds_forward());
  CHECK(&fwd.workspace() == &ws);
  Mat<double> dX(6, 8), dW(9, 8);
  ml::backward(fwd, 2.5, {dX, dW});
  CHECK_FALSE(ws.holds_forward());
  CHECK(loss == r.loss);
  CHECK(rel_error(dX, 2.5 * r.dX) < 1e-14);
  CHECK(rel_error(dW, 2.5 * r.dW) < 1e-14);
  // A forward is consumed by its backward.
  CHECK_THROWS_WITH_AS(ml::backward(fwd, 1.0, {dX, dW}),
                       doctest::Contains("backward() needs a forward() on the same workspace first"),
                       ml::invalid_argument);
}

TEST_CASE("The Forward context: loss() and regulariser() equal forward_backward's, with or without learnable margins") {
  Case c = random_case(6, 8, 9, 41);
  c.labels << 0, 3, 3, 5, 8, 1;
  Mat<double> dX(6, 8), dW(9, 8);
  Eigen::VectorXd dm(9);
  SUBCASE("ArcFace: no regulariser") {
    const ml::ArcFace<double> p{64, 0.5};
    const auto r = ml::forward_backward(p, c.X, c.W, c.labels);
    ml::Workspace<double> ws;
    const auto fwd = ml::forward(p, c.X, c.W, c.labels, ws);
    CHECK(fwd.loss() == r.loss);
    CHECK(fwd.regulariser() == 0.0);
    CHECK(r.regulariser == 0.0);
    CHECK(fwd.policy().s == p.s);
    CHECK(fwd.policy().m == p.m);
    ml::backward(fwd, 1.0, {dX, dW});
    CHECK(dX == r.dX);
    CHECK(dW == r.dW);
    // The caller-owned forward_backward returns the same loss.
    ml::Workspace<double> ws2;
    CHECK(ml::forward_backward(p, c.X, c.W, c.labels, {dX, dW}, ws2) == fwd.loss());
  }
  for (auto scope : {ml::RegulariserScope::all_classes, ml::RegulariserScope::batch_classes}) {
    CAPTURE(scope == ml::RegulariserScope::all_classes);
    Eigen::VectorXd margins(9);
    for (Index k = 0; k < 9; ++k) margins(k) = 0.3 + 0.01 * static_cast<double>(k);
    const ml::AdaptiveMargin<double> p{30, margins, 7.0, scope};
    const auto r = ml::forward_backward(p, c.X, c.W, c.labels);
    ml::Workspace<double> ws;
    const auto fwd = ml::forward(p, c.X, c.W, c.labels, ws);
    CHECK(fwd.loss() == r.loss);
    CHECK(fwd.regulariser() == r.regulariser);
    // R = -lambda_m mean_{j in J} m_j, J every class or the batch's distinct classes 0, 1, 3, 5, 8.
    const double R = scope == ml::RegulariserScope::all_classes
                         ? -7.0 * margins.mean()
                         : -7.0 * (margins(0) + margins(1) + margins(3) + margins(5) + margins(8)) / 5;
    CHECK(fwd.regulariser() == doctest::Approx(R).epsilon(1e-14));
    ml::backward(fwd, 1.0, {dX, dW, dm});
    CHECK(dX == r.dX);
    CHECK(dW == r.dW);
    CHECK(dm == r.dmargins);
    ml::Workspace<double> ws2;
    CHECK(ml::forward_backward(p, c.X, c.W, c.labels, {dX, dW, dm}, ws2) == fwd.loss());
  }
}

TEST_CASE("A workspace is reused across shapes and steps without changing results") {
  ml::Workspace<double> ws;
  const ml::CosFace<double> p{30, 0.35};
  for (auto shape : {std::array<Index, 3>{4, 5, 6}, std::array<Index, 3>{7, 3, 11}, std::array<Index, 3>{4, 5, 6}}) {
    Case c = random_case(shape[0], shape[1], shape[2], 50 + shape[2]);
    Mat<double> dX(shape[0], shape[1]), dW(shape[2], shape[1]);
    const double loss = ml::forward_backward(p, c.X, c.W, c.labels, {dX, dW}, ws);
    const auto ref = ml::forward_backward(p, c.X, c.W, c.labels);
    CHECK(loss == ref.loss);
    CHECK(dX == ref.dX);
    CHECK(dW == ref.dW);
  }
}

TEST_CASE("Gradients are tangent: dW_j is orthogonal to w_j and, at fixed scale, dX_i to x_i") {
  Case c = random_case(5, 7, 8, 60);
  const auto r = ml::forward_backward(ml::ArcFace<double>{64, 0.5}, c.X, c.W, c.labels);
  for (Index i = 0; i < c.X.rows(); ++i) CHECK(std::fabs(r.dX.row(i).dot(c.X.row(i))) < 1e-12 * c.X.row(i).norm());
  for (Index j = 0; j < c.W.rows(); ++j) CHECK(std::fabs(r.dW.row(j).dot(c.W.row(j))) < 1e-12 * c.W.row(j).norm());
}
