// Per-class margins: AdaptiveMargin (learnable, with dL/dmargins) and ClassMargins (fixed).
#include <doctest/doctest.h>

#include "support.hpp"

using namespace mltest;

namespace {

Eigen::VectorXd margins_for(Index C, std::uint64_t seed) {
  SplitMix64 rng(seed);
  Eigen::VectorXd m(C);
  for (Index k = 0; k < C; ++k) m(k) = 0.3 + 0.1 * rng.uniform();  // FaceX-Zoo's U(0.3, 0.4)
  return m;
}

}  // namespace

TEST_CASE("AdaptiveMargin: dX, dW and dmargins against finite differences, both regulariser scopes") {
  Case c = random_case(6, 5, 9, 1);
  c.labels << 0, 3, 3, 5, 8, 0;  // repeated classes and classes absent from the batch
  for (auto scope : {ml::RegulariserScope::all_classes, ml::RegulariserScope::batch_classes}) {
    CAPTURE(scope == ml::RegulariserScope::all_classes);
    ml::AdaptiveMargin<double> p{30, margins_for(9, 2), 7.0, scope};
    const auto r = ml::forward_backward(p, c.X, c.W, c.labels);
    REQUIRE(r.dmargins.size() == 9);
    auto loss = [&] { return ml::forward_backward(p, c.X, c.W, c.labels).loss; };
    CHECK(rel_error(r.dX, fd_gradient(c.X, loss)) < 1e-6);
    CHECK(rel_error(r.dW, fd_gradient(c.W, loss)) < 1e-6);
    Mat<double> m = p.margins.transpose();
    auto loss_m = [&] {
      p.margins = m.transpose();
      return ml::forward_backward(p, c.X, c.W, c.labels).loss;
    };
    const Mat<double> fd_m = fd_gradient(m, loss_m);
    p.margins = m.transpose();
    CHECK(rel_error(r.dmargins.transpose(), fd_m) < 1e-6);
  }
}

TEST_CASE("AdaptiveMargin: dmargins equals the closed form (s/B) sum (1 - p_ik) - lambda/C") {
  Case c = random_case(5, 4, 6, 3);
  c.labels << 1, 1, 2, 4, 4;
  const double s = 20, lambda = 3;
  ml::AdaptiveMargin<double> p{s, margins_for(6, 4), lambda};
  const auto r = ml::forward_backward(p, c.X, c.W, c.labels);
  Eigen::VectorXd expect = Eigen::VectorXd::Constant(6, -lambda / 6);
  const Mat<double> cos = c.X.rowwise().normalized() * c.W.rowwise().normalized().transpose();
  double ce = 0;
  for (Index i = 0; i < 5; ++i) {
    Eigen::VectorXd z = s * cos.row(i).transpose();
    const Index y = c.labels(i);
    z(y) = s * (cos(i, y) - p.margins(y));
    const double lse = std::log(z.array().exp().sum());
    ce += (lse - z(y)) / 5;
    expect(y) += s / 5 * (1 - std::exp(z(y) - lse));
  }
  CHECK(rel_error(r.dmargins, expect) < 1e-12);
  CHECK(r.loss == doctest::Approx(ce - lambda * p.margins.mean()).epsilon(1e-12));
}

TEST_CASE("AdaptiveMargin with equal margins and lambda = 0 is CosFace; ClassMargins with equal margins too") {
  Case c = random_case(7, 5, 8, 5);
  const auto ref = ml::forward_backward(ml::CosFace<double>{30, 0.35}, c.X, c.W, c.labels);
  const auto a = ml::forward_backward(ml::AdaptiveMargin<double>{30, Eigen::VectorXd::Constant(8, 0.35), 0.0}, c.X, c.W, c.labels);
  CHECK(rel_error(a.loss, ref.loss) < 1e-12);
  CHECK(rel_error(a.dX, ref.dX) < 1e-12);
  CHECK(rel_error(a.dW, ref.dW) < 1e-12);
  const auto f = ml::forward_backward(ml::class_margins(ml::CosFace<double>{30, 0.0}, Eigen::VectorXd::Constant(8, 0.35)),
                                      c.X, c.W, c.labels);
  CHECK(rel_error(f.loss, ref.loss) < 1e-12);
  CHECK(rel_error(f.dW, ref.dW) < 1e-12);
  CHECK(f.dmargins.size() == 0);  // fixed margins: no gradient
}

TEST_CASE("ClassMargins: per-class margins on ArcFace and MV-Softmax, by finite differences") {
  Case c = case_with_targets({0.9, 0.5, 0.1, -0.4}, 6, 7, 6);
  Eigen::VectorXd m(7);
  m << 0.5, 0.3, 0.45, 0.2, 0.35, 0.4, 0.25;
  for (int k = 0; k < 2; ++k) {
    auto check = [&](const auto& p) {
      const auto r = ml::forward_backward(p, c.X, c.W, c.labels);
      auto loss = [&] { return ml::forward_backward(p, c.X, c.W, c.labels).loss; };
      CHECK(rel_error(r.dX, fd_gradient(c.X, loss)) < 1e-6);
      CHECK(rel_error(r.dW, fd_gradient(c.W, loss)) < 1e-6);
    };
    if (k == 0) check(ml::class_margins(ml::ArcFace<double>{32, 0.0}, m));
    if (k == 1) check(ml::class_margins(ml::CosFace<double>{32, 0.0}, m));
  }
  // Sample i's row uses margins(y_i): compare with a single-margin policy row by row.
  const auto pm = ml::class_margins(ml::ArcFace<double>{32, 0.0}, m);
  for (Index y = 0; y < 7; ++y) CHECK(pm.row(0.3, y).target.value == ml::ArcFace<double>{32, m(y)}.row(0.3, y).target.value);
}

TEST_CASE("LDAM margins from class counts, and the projection") {
  Eigen::VectorXi counts(4);
  counts << 1000, 100, 10, 1;
  const Eigen::VectorXd m = ml::margins_from_class_counts(counts, 0.5);
  CHECK(m(3) == doctest::Approx(0.5));
  CHECK(m(0) == doctest::Approx(0.5 * std::pow(1.0 / 1000, 0.25)));
  CHECK(m(1) < m(2));
  counts(2) = 0;
  CHECK_THROWS_AS(ml::margins_from_class_counts(counts, 0.5), ml::invalid_argument);
  Eigen::VectorXd v(3);
  v << -0.2, 0.5, 1.7;
  ml::project_margins(v);
  CHECK(v(0) == 0.0);
  CHECK(v(1) == 0.5);
  CHECK(v(2) == 1.0);
}

TEST_CASE("AdaptiveMargin errors") {
  Case c = random_case(3, 4, 5, 7);
  auto msg = [&](const auto& p) -> std::string {
    try {
      ml::forward_backward(p, c.X, c.W, c.labels);
    } catch (const ml::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  CHECK(msg(ml::AdaptiveMargin<double>{30, Eigen::VectorXd::Constant(4, 0.3), 70}).find("margins has 4 entries but there are 5 classes") != std::string::npos);
  CHECK(msg(ml::AdaptiveMargin<double>{30, Eigen::VectorXd(), 70}).find("margins is empty") != std::string::npos);
  Eigen::VectorXd bad = Eigen::VectorXd::Constant(5, 0.3);
  bad(2) = std::numeric_limits<double>::quiet_NaN();
  CHECK(msg(ml::AdaptiveMargin<double>{30, bad, 70}).find("margins(2) = nan") != std::string::npos);
  CHECK(msg(ml::AdaptiveMargin<double>{30, Eigen::VectorXd::Constant(5, 0.3), -1}).find("lambda_m = -1") != std::string::npos);
  bad(2) = -0.1;
  CHECK(msg(ml::class_margins(ml::CosFace<double>{}, bad)).find("margins(2) = -0.1") != std::string::npos);
  ml::Workspace<double> ws;
  Mat<double> dX(3, 4), dW(5, 4);
  Eigen::VectorXd dm(4);
  const ml::AdaptiveMargin<double> ok{30, Eigen::VectorXd::Constant(5, 0.3), 70};
  CHECK_THROWS_WITH_AS(ml::forward_backward(ok, c.X, c.W, c.labels, dX, dW, dm, ws),
                       doctest::Contains("dmargins has 4 entries"), ml::invalid_argument);
}

TEST_CASE("AdaptiveMargin with C >> B: margins stay finite and inside [0, 1], and learn") {
  // 2000 classes, batches of 32: most classes are absent from any batch.
  const Index C = 2000, D = 16, B = 32;
  SplitMix64 rng(11);
  Mat<double> W(C, D), centres(C, D);
  for (Index k = 0; k < W.size(); ++k) W.data()[k] = 0.1 * rng.normal();
  for (Index k = 0; k < centres.size(); ++k) centres.data()[k] = rng.normal();
  for (auto scope : {ml::RegulariserScope::all_classes, ml::RegulariserScope::batch_classes}) {
    ml::AdaptiveMargin<double> p{30, Eigen::VectorXd::Constant(C, 0.35), 70, scope};
    Mat<double> Wt = W, X(B, D), dX(B, D), dW(C, D);
    Eigen::VectorXd dm(C);
    Eigen::VectorXi y(B);
    ml::Workspace<double> ws;
    for (int step = 0; step < 300; ++step) {
      for (Index i = 0; i < B; ++i) {
        y(i) = static_cast<int>(rng.next() % 200);  // only the first 200 classes ever appear
        X.row(i) = centres.row(y(i)) + 0.3 * Eigen::RowVectorXd::NullaryExpr(D, [&] { return rng.normal(); });
      }
      const double loss = ml::forward_backward(p, X, Wt, y, dX, dW, dm, ws);
      REQUIRE(std::isfinite(loss));
      Wt -= 0.5 * dW;
      p.margins -= 0.01 * dm;
      ml::project_margins(p.margins);
      REQUIRE(p.margins.allFinite());
    }
    CHECK(p.margins.minCoeff() >= 0.0);
    CHECK(p.margins.maxCoeff() <= 1.0);
    const double seen = p.margins.head(200).mean(), unseen = p.margins.tail(C - 200).mean();
    CAPTURE(seen);
    CAPTURE(unseen);
    if (scope == ml::RegulariserScope::all_classes) {
      // Absent classes only feel the regulariser: they rise; sampled ones are held down by the data.
      CHECK(unseen > 0.35);
      CHECK(seen < unseen);
    } else {
      CHECK(unseen == doctest::Approx(0.35));  // untouched
      CHECK(seen != doctest::Approx(0.35));
    }
  }
}
