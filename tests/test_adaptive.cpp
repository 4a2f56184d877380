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
    Eigen::VectorXd margins = margins_for(9, 2);
    const ml::AdaptiveMargin<double> p{30, margins, 7.0, scope};  // a view: updated in place below
    const auto r = ml::forward_backward(p, c.X, c.W, c.labels);
    REQUIRE(r.dmargins.size() == 9);
    auto loss = [&] { return ml::forward_backward(p, c.X, c.W, c.labels).loss; };
    CHECK(rel_error(r.dX, fd_gradient(c.X, loss)) < 1e-6);
    CHECK(rel_error(r.dW, fd_gradient(c.W, loss)) < 1e-6);
    Mat<double> m = margins.transpose();
    auto loss_m = [&] {
      margins = m.transpose();  // same size: written in place, the policy's view stays valid
      return ml::forward_backward(p, c.X, c.W, c.labels).loss;
    };
    const Mat<double> fd_m = fd_gradient(m, loss_m);
    margins = m.transpose();
    CHECK(rel_error(r.dmargins.transpose(), fd_m) < 1e-6);
  }
}

TEST_CASE("AdaptiveMargin: dmargins equals the closed form (s/B) sum (1 - p_ik) - lambda/C") {
  Case c = random_case(5, 4, 6, 3);
  c.labels << 1, 1, 2, 4, 4;
  const double s = 20, lambda = 3;
  const Eigen::VectorXd margins = margins_for(6, 4);
  const ml::AdaptiveMargin<double> p{s, margins, lambda};
  const auto r = ml::forward_backward(p, c.X, c.W, c.labels);
  Eigen::VectorXd expect = Eigen::VectorXd::Constant(6, -lambda / 6);
  const Mat<double> cos = c.X.rowwise().normalized() * c.W.rowwise().normalized().transpose();
  double ce = 0;
  for (Index i = 0; i < 5; ++i) {
    Eigen::VectorXd z = s * cos.row(i).transpose();
    const Index y = c.labels(i);
    z(y) = s * (cos(i, y) - margins(y));
    const double lse = std::log(z.array().exp().sum());
    ce += (lse - z(y)) / 5;
    expect(y) += s / 5 * (1 - std::exp(z(y) - lse));
  }
  CHECK(rel_error(r.dmargins, expect) < 1e-12);
  CHECK(r.loss == doctest::Approx(ce - lambda * margins.mean()).epsilon(1e-12));
}

TEST_CASE("AdaptiveMargin with equal margins and lambda = 0 is CosFace -- ClassMargins with equal margins too") {
  Case c = random_case(7, 5, 8, 5);
  const auto ref = ml::forward_backward(ml::CosFace<double>{30, 0.35}, c.X, c.W, c.labels);
  const Eigen::VectorXd equal = Eigen::VectorXd::Constant(8, 0.35);
  const auto a = ml::forward_backward(ml::AdaptiveMargin<double>{30, equal, 0.0}, c.X, c.W, c.labels);
  CHECK(rel_error(a.loss, ref.loss) < 1e-12);
  CHECK(rel_error(a.dX, ref.dX) < 1e-12);
  CHECK(rel_error(a.dW, ref.dW) < 1e-12);
  const auto f = ml::forward_backward(ml::class_margins(ml::CosFace<double>{30, 0.0}, equal),
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
  // Any writable Eigen vector: a Map of a foreign buffer (a tensor's memory), in place.
  std::vector<float> buf{-0.2f, 0.5f, 1.7f, 0.25f};
  ml::project_margins(Eigen::Map<ml::Vector<float>>(buf.data(), 4), 0.1f, 0.6f);
  CHECK(buf == std::vector<float>{0.1f, 0.5f, 0.6f, 0.25f});
  CHECK_THROWS_WITH_AS(ml::project_margins(v, 1.0, 0.5), doctest::Contains("project_margins: lo = 1 must be <= hi = 0.5"),
                       ml::invalid_argument);
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
  const Eigen::VectorXd four = Eigen::VectorXd::Constant(4, 0.3), five = Eigen::VectorXd::Constant(5, 0.3), none;
  CHECK(msg(ml::AdaptiveMargin<double>{30, four, 70}).find("AdaptiveMargin: margins has 4 entries but there are 5 classes") != std::string::npos);
  CHECK(msg(ml::AdaptiveMargin<double>{30, none, 70}).find("AdaptiveMargin: margins is empty: it needs one entry per class") != std::string::npos);
  CHECK(msg(ml::AdaptiveMargin<double>{30, {}, 70}).find("AdaptiveMargin: margins is empty") != std::string::npos);
  CHECK(msg(ml::AdaptiveMargin<double>{30, ml::ClassValues<double>(nullptr, 5), 70})
            .find("AdaptiveMargin: margins points to no memory (null data with 5 entries)") != std::string::npos);
  Eigen::VectorXd bad = five;
  bad(2) = std::numeric_limits<double>::quiet_NaN();
  CHECK(msg(ml::AdaptiveMargin<double>{30, bad, 70}).find("AdaptiveMargin: margins(2) = nan must be finite") != std::string::npos);
  CHECK(msg(ml::AdaptiveMargin<double>{30, five, -1}).find("lambda_m = -1") != std::string::npos);
  bad(2) = -0.1;
  CHECK(msg(ml::class_margins(ml::CosFace<double>{}, bad)).find("CosFace: margins(2) = -0.1 is not a valid margin (CosFace: m = -0.1 must be >= 0)") != std::string::npos);
  CHECK(msg(ml::class_margins(ml::CosFace<double>{}, four)).find("CosFace: margins has 4 entries but there are 5 classes") != std::string::npos);
  CHECK(msg(ml::class_margins(ml::CosFace<double>{}, none)).find("CosFace: margins is empty") != std::string::npos);
  ml::Workspace<double> ws;
  Mat<double> dX(3, 4), dW(5, 4);
  Eigen::VectorXd dm(4);
  const ml::AdaptiveMargin<double> ok{30, five, 70};
  CHECK_THROWS_WITH_AS(ml::forward_backward(ok, c.X, c.W, c.labels, {dX, dW, dm}, ws),
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
    // The caller owns the margins; the policy, built once, views them through every step.
    Eigen::VectorXd margins = Eigen::VectorXd::Constant(C, 0.35);
    const ml::AdaptiveMargin<double> p{30, margins, 70, scope};
    Mat<double> Wt = W, X(B, D), dX(B, D), dW(C, D);
    Eigen::VectorXd dm(C);
    Eigen::VectorXi y(B);
    ml::Workspace<double> ws;
    for (int step = 0; step < 300; ++step) {
      for (Index i = 0; i < B; ++i) {
        y(i) = static_cast<int>(rng.next() % 200);  // only the first 200 classes ever appear
        X.row(i) = centres.row(y(i)) + 0.3 * Eigen::RowVectorXd::NullaryExpr(D, [&] { return rng.normal(); });
      }
      const double loss = ml::forward_backward(p, X, Wt, y, {dX, dW, dm}, ws);
      REQUIRE(std::isfinite(loss));
      Wt -= 0.5 * dW;
      margins -= 0.01 * dm;
      ml::project_margins(margins);
      REQUIRE(margins.allFinite());
    }
    CHECK(margins.minCoeff() >= 0.0);
    CHECK(margins.maxCoeff() <= 1.0);
    const double seen = margins.head(200).mean(), unseen = margins.tail(C - 200).mean();
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

namespace {

// Margins around the edges of the two rules (a cosine margin: finite and >= 0; an angular one:
// [0, pi)), and whether each is a valid cosine / angular margin, written out from those rules.
template <typename T>
struct MarginProbe {
  T value;
  bool cosine_ok, angular_ok;
};

template <typename T>
std::vector<MarginProbe<T>> margin_probes() {
  const T pi = static_cast<T>(3.14159265358979323846), inf = std::numeric_limits<T>::infinity();
  return {{T(-1), false, false},
          {-std::numeric_limits<T>::denorm_min(), false, false},
          {T(-0.0), true, true},
          {T(0), true, true},
          {T(0.3), true, true},
          {T(3.14), true, true},
          {std::nextafter(pi, T(0)), true, true},
          {pi, true, false},  // pi rounded to T: above the true pi for float and double alike
          {T(3.2), true, false},
          {T(1e30), true, false},
          {std::numeric_limits<T>::max(), true, false},
          {inf, false, false},
          {-inf, false, false},
          {std::numeric_limits<T>::quiet_NaN(), false, false}};
}

// margin_in_range(v) agrees with validate() accepting m = v, with the rule the policy states,
// and with ClassMargins<P>'s per-class check.
template <typename P>
void check_margin_in_range(const P& base, bool angular) {
  using T = typename P::value_type;
  REQUIRE_NOTHROW(base.validate());
  for (const auto& probe : margin_probes<T>()) {
    const T v = probe.value;
    P q = base;
    q.m = v;
    bool accepted = true;
    try {
      q.validate();
    } catch (const ml::invalid_argument&) {
      accepted = false;
    }
    CAPTURE(P::name);
    CAPTURE(angular);
    CAPTURE(v);
    CHECK(accepted == (angular ? probe.angular_ok : probe.cosine_ok));
    CHECK(base.margin_in_range(v) == accepted);
    CHECK(q.margin_in_range(v) == accepted);  // not a function of the policy's own m
    CHECK(ml::ClassMargins<P>{base, {}}.class_value_ok(v) == accepted);
  }
}

template <typename T>
void check_margin_in_range_all() {
  const auto arc = ml::MarginTarget::additive_angular;
  check_margin_in_range(ml::CosFace<T>{}, false);
  check_margin_in_range(ml::ArcFace<T>{}, true);
  check_margin_in_range(ml::SVSoftmax<T>{}, false);
  ml::SVSoftmax<T> sv_arc;
  sv_arc.target = arc;
  check_margin_in_range(sv_arc, true);
  check_margin_in_range(ml::MVSoftmax<T>{}, false);
  ml::MVSoftmax<T> mv_arc;
  mv_arc.target = arc;
  check_margin_in_range(mv_arc, true);
  check_margin_in_range(ml::CurricularFace<T>{}, true);
  check_margin_in_range(ml::AMMSoftmax<T>{}, true);
}

}  // namespace

TEST_CASE("margin_in_range agrees with validate() for every policy with a margin m") {
  SUBCASE("float") { check_margin_in_range_all<float>(); }
  SUBCASE("double") { check_margin_in_range_all<double>(); }
}

TEST_CASE("A bad margin in the caller's vector: the engines' messages, every entry point") {
  Case c = random_case(4, 5, 6, 21);
  c.labels << 0, 2, 2, 5;
  auto message = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const ml::invalid_argument& e) {
      return e.what();
    }
    return "no exception";
  };
  const Mat<double> cos = c.X.rowwise().normalized() * c.W.rowwise().normalized().transpose();
  SUBCASE("AdaptiveMargin: nan (in a class absent from the batch too)") {
    for (const Index k : {Index(2), Index(4)}) {
      Eigen::VectorXd m = margins_for(6, 22);
      m(k) = std::numeric_limits<double>::quiet_NaN();
      const ml::AdaptiveMargin<double> p{30, m, 5.0};
      const std::string expect = "marginloss: AdaptiveMargin: margins(" + std::to_string(k) + ") = nan must be finite";
      CHECK(message([&] { (void)ml::forward_backward(p, c.X, c.W, c.labels); }) == expect);
      ml::Workspace<double> ws;
      CHECK(message([&] { (void)ml::forward(p, c.X, c.W, c.labels, ws); }) == expect);
      m(k) = std::numeric_limits<double>::infinity();
      CHECK(message([&] { (void)ml::forward_backward(p, c.X, c.W, c.labels); }) ==
            "marginloss: AdaptiveMargin: margins(" + std::to_string(k) + ") = inf must be finite");
    }
  }
  SUBCASE("ClassMargins<ArcFace>: 4 (>= pi), nan, -0.5") {
    Eigen::VectorXd m = margins_for(6, 23);
    const auto p = ml::class_margins(ml::ArcFace<double>{32, 0.5}, m);
    m(3) = 4;
    const std::string expect = "marginloss: ArcFace: margins(3) = 4 is not a valid margin (ArcFace: m = 4 must be < pi)";
    CHECK(message([&] { (void)ml::forward_backward(p, c.X, c.W, c.labels); }) == expect);
    CHECK(message([&] { (void)ml::cosine_forward_backward(p, cos, c.labels); }) == expect);
    m(3) = std::numeric_limits<double>::quiet_NaN();
    CHECK(message([&] { (void)ml::forward_backward(p, c.X, c.W, c.labels); }) ==
          "marginloss: ArcFace: margins(3) = nan is not a valid margin (ArcFace: m = nan must be finite)");
    m(3) = 0.4;
    m(1) = -0.5;
    CHECK(message([&] { (void)ml::forward_backward(p, c.X, c.W, c.labels); }) ==
          "marginloss: ArcFace: margins(1) = -0.5 is not a valid margin (ArcFace: m = -0.5 must be >= 0)");
    m(1) = 0.4;
    CHECK_NOTHROW((void)ml::forward_backward(p, c.X, c.W, c.labels));
  }
  SUBCASE("the count, at every entry point") {
    const Eigen::VectorXd m5 = Eigen::VectorXd::Constant(5, 0.3), m6 = Eigen::VectorXd::Constant(6, 0.3);
    CHECK(message([&] { (void)ml::cosine_forward_backward(ml::class_margins(ml::CosFace<double>{}, m5), cos, c.labels); }) ==
          "marginloss: CosFace: margins has 5 entries but there are 6 classes");
    CHECK(message([&] { (void)ml::forward_backward(ml::AdaptiveMargin<double>{30, m5}, c.X, c.W, c.labels); }) ==
          "marginloss: AdaptiveMargin: margins has 5 entries but there are 6 classes");
    // The split forward (its backward takes the policy from the forward's context: no other
    // margins vector can reach it).
    ml::Workspace<double> ws;
    CHECK(message([&] {
            (void)ml::forward(ml::AdaptiveMargin<double>{30, m5}, c.X, c.W, c.labels, ws);
          }) == "marginloss: AdaptiveMargin: margins has 5 entries but there are 6 classes");
    CHECK(message([&] {
            (void)ml::forward(ml::AdaptiveMargin<double>{30, m6}, c.X, c.W, c.labels, ws);
          }) == "no exception");
  }
}

TEST_CASE("The policies view the caller's margins: a value changed in place is seen by the next step") {
  Case c = random_case(5, 4, 6, 31);
  c.labels << 1, 1, 2, 4, 0;
  SUBCASE("AdaptiveMargin") {
    Eigen::VectorXd m = margins_for(6, 32);
    const ml::AdaptiveMargin<double> p{30, m, 5.0};  // built once
    ml::Workspace<double> ws;
    Mat<double> dX(5, 4), dW(6, 4);
    Eigen::VectorXd dm(6);
    const double before = ml::forward_backward(p, c.X, c.W, c.labels, {dX, dW, dm}, ws);
    m -= 0.5 * dm;  // an optimiser step, in place
    ml::project_margins(m);
    const double after = ml::forward_backward(p, c.X, c.W, c.labels, {dX, dW, dm}, ws);
    const Eigen::VectorXd copy = m;  // a separate vector with the updated values
    const auto fresh = ml::forward_backward(ml::AdaptiveMargin<double>{30, copy, 5.0}, c.X, c.W, c.labels);
    CHECK(after != before);
    CHECK(after == fresh.loss);
    CHECK(dm == fresh.dmargins);
    // ... but not between a forward and its backward: the context's policy views the same
    // margins, and its backward sees that they changed.
    {
      const auto fwd = ml::forward(p, c.X, c.W, c.labels, ws);
      const double keep = m(3);  // class 3 is absent from the batch
      m(3) = keep + 0.01;
      CHECK_THROWS_WITH_AS(ml::backward(fwd, 1.0, {dX, dW, dm}),
                           doctest::Contains("backward() got AdaptiveMargin with other parameters or per-class margins "
                                             "than its forward()"),
                           ml::invalid_argument);
      m(3) = keep;
    }
    m(5) = std::numeric_limits<double>::quiet_NaN();  // class 5 is absent from the batch
    CHECK_THROWS_WITH_AS(ml::forward_backward(p, c.X, c.W, c.labels, {dX, dW, dm}, ws),
                         "marginloss: AdaptiveMargin: margins(5) = nan must be finite", ml::invalid_argument);
  }
  SUBCASE("ClassMargins, std::vector and Eigen::Map of the same memory") {
    std::vector<double> m{0.3, 0.2, 0.45, 0.1, 0.35, 0.25};
    const auto p = ml::class_margins(ml::CosFace<double>{30, 0.0}, m);
    const Eigen::Map<const Eigen::VectorXd> map(m.data(), 6);
    const auto q = ml::class_margins(ml::CosFace<double>{30, 0.0}, map);
    const double before = ml::forward_backward(p, c.X, c.W, c.labels).loss;
    CHECK(ml::forward_backward(q, c.X, c.W, c.labels).loss == before);
    m[2] = 0.05;
    const double after = ml::forward_backward(p, c.X, c.W, c.labels).loss;
    CHECK(after < before);  // class 2 (in the batch) has a smaller margin: a smaller loss
    CHECK(ml::forward_backward(q, c.X, c.W, c.labels).loss == after);
    m[2] = -1;
    CHECK_THROWS_WITH_AS((void)ml::forward_backward(q, c.X, c.W, c.labels),
                         "marginloss: CosFace: margins(2) = -1 is not a valid margin (CosFace: m = -1 must be >= 0)",
                         ml::invalid_argument);
  }
}
