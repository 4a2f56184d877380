// Numeric extremes for every policy, beyond tests/test_policies.cpp: s = 128 in float,
// cosines exactly +-1 and within 1e-7 of them (dense and cosine level), labels 0 and C - 1,
// C = 1 and C = 2 against closed forms, B = 1 and D = 1, row norms from 1e-20 to 1e20 for
// X and W, float and double.
#include <doctest/doctest.h>

#include <limits>
#include <string>

#include "../support.hpp"

using namespace mltest;

namespace {

template <typename R>
bool finite(const R& r) {
  return std::isfinite(r.loss) && r.dX.allFinite() && r.dW.allFinite();
}

// Every policy and its variants (fallbacks, gradient modes, SphereFace m = 1..5 in both scale
// modes) at scale s (SphereFace in feature-norm mode ignores s).
template <typename T, typename F>
void for_each_policy(T s, F&& f) {
  f("NormFace", ml::NormFace<T>{s});
  f("CosFace", ml::CosFace<T>{s, T(0.35)});
  f("CosFace conditional", ml::CosFace<T>{s, T(0.35), true});
  for (auto fb : {ml::Fallback::hard_threshold, ml::Fallback::easy_margin, ml::Fallback::none})
    for (auto g : {ml::Gradient::exact, ml::Gradient::straight_through}) {
      const std::string tag = std::string(" ") + ml::to_string(fb) + " " + ml::to_string(g);
      f(("ArcFace" + tag).c_str(), ml::ArcFace<T>{s, T(0.5), fb, g});
      f(("CombinedMargin (1, 0.3, 0.2)" + tag).c_str(), ml::CombinedMargin<T>{s, T(1), T(0.3), T(0.2), fb, g});
      f(("CombinedMargin (1.5, 0.1, 0.05)" + tag).c_str(), ml::CombinedMargin<T>{s, T(1.5), T(0.1), T(0.05), fb, g});
      f(("CombinedMargin (0.9, 0.4, 0.15)" + tag).c_str(), ml::CombinedMargin<T>{s, T(0.9), T(0.4), T(0.15), fb, g});
    }
  for (int m = 1; m <= 5; ++m) {
    const std::string tag = " m=" + std::to_string(m);
    f(("SphereFace feature norm" + tag).c_str(), ml::SphereFace<T>{m, T(5)});
    f(("SphereFace feature norm lambda 0" + tag).c_str(), ml::SphereFace<T>{m, T(0)});
    f(("SphereFace fixed" + tag).c_str(), ml::SphereFace<T>{m, T(0), ml::Scale::fixed, s});
  }
}

// The same policy in double, to compare a float result with.
template <typename T>
ml::NormFace<double> in_double(const ml::NormFace<T>& p) { return {double(p.s)}; }
template <typename T>
ml::CosFace<double> in_double(const ml::CosFace<T>& p) { return {double(p.s), double(p.m), p.conditional_margin}; }
template <typename T>
ml::ArcFace<double> in_double(const ml::ArcFace<T>& p) { return {double(p.s), double(p.m), p.fallback, p.gradient}; }
template <typename T>
ml::CombinedMargin<double> in_double(const ml::CombinedMargin<T>& p) {
  return {double(p.s), double(p.m1), double(p.m2), double(p.m3), p.fallback, p.gradient};
}
template <typename T>
ml::SphereFace<double> in_double(const ml::SphereFace<T>& p) { return {p.m, double(p.lambda), p.scale_mode, double(p.s)}; }

// The logits' scale S_i for a sample of norm x_norm.
template <typename P>
double scale_of(const P& p, double x_norm) {
  return static_cast<double>(p.scale(static_cast<typename P::value_type>(x_norm)));
}

}  // namespace

TEST_CASE("s = 128 in float: every policy finite and close to double") {
  // Target cosines spread over (-1, 1), away from the fallback thresholds' neighbourhood
  // within float rounding; ten classes of random others.
  const Case c = case_with_targets({0.93, 0.61, 0.2, -0.13, -0.47, -0.81, 0.77, 0.05}, 12, 10, 301);
  const Mat<float> Xf = c.X.cast<float>(), Wf = c.W.cast<float>();
  for_each_policy<float>(128.f, [&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    const auto rf = ml::forward_backward(policy, Xf, Wf, c.labels);
    REQUIRE(finite(rf));
    const auto rd = ml::forward_backward(in_double(policy), c.X, c.W, c.labels);
    // float vs double: loss relative 1e-4 (s = 128 amplifies cosine rounding), gradients
    // relative to their largest entry.
    CHECK(std::fabs(double(rf.loss) - rd.loss) <= 1e-4 * std::max(1.0, std::fabs(rd.loss)));
    CHECK(rel_error(rf.dX.template cast<double>(), rd.dX, 1e-3) <= 2e-3);
    CHECK(rel_error(rf.dW.template cast<double>(), rd.dW, 1e-3) <= 2e-3);
  });
}

TEST_CASE("s = 128 in float with the target far below every other class: finite, no overflow") {
  // The loss is about s * (c_other - f(t)), the largest a margin policy can make: up to
  // 128 * (1 + 2m + ...) with t = -1 and another class at c = 1.
  Case c = random_case(3, 6, 4, 302);
  c.labels << 0, 1, 2;
  c.X.row(0) = -c.W.row(0);  // t = -1
  c.W.row(3) = c.X.row(0);   // another class at c = +1
  c.X.row(1) = -2.0 * c.W.row(1);
  c.X.row(2) = 0.5 * c.W.row(3);
  const Mat<float> Xf = c.X.cast<float>(), Wf = c.W.cast<float>();
  for_each_policy<float>(128.f, [&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    const auto r = ml::forward_backward(policy, Xf, Wf, c.labels);
    CHECK(finite(r));
    CHECK(r.loss > 0.f);
  });
}

TEST_CASE("Cosines exactly +-1 and within 1e-7 of them: finite loss and gradients (dense)") {
  const std::vector<double> targets = {1.0, -1.0, 1.0 - 1e-7, -1.0 + 1e-7, 1.0 - 1e-8, -1.0 + 1e-8, 1.0 - 3e-7};
  const Case near = case_with_targets(targets, 5, 9, 303);
  // Exact +-1 by construction: x parallel or antiparallel to its class weight.
  Case exact = random_case(4, 5, 6, 304);
  exact.labels << 0, 1, 2, 5;
  exact.X.row(0) = 1.5 * exact.W.row(0);
  exact.X.row(1) = -0.25 * exact.W.row(1);
  exact.X.row(2) = exact.W.row(2);
  exact.X.row(3) = -exact.W.row(5);
  exact.W.row(4) = -exact.W.row(0);  // a non-target class at exactly -1 for sample 0
  for (const Case* c : std::initializer_list<const Case*>{&near, &exact}) {
    const Mat<float> Xf = c->X.cast<float>(), Wf = c->W.cast<float>();
    for_each_policy<float>(64.f, [&](const char* label, const auto& policy) {
      const std::string name = label;
      CAPTURE(name);
      CHECK(finite(ml::forward_backward(policy, Xf, Wf, c->labels)));
    });
    for_each_policy<double>(64.0, [&](const char* label, const auto& policy) {
      const std::string name = label;
      CAPTURE(name);
      CHECK(finite(ml::forward_backward(policy, c->X, c->W, c->labels)));
    });
  }
}

TEST_CASE("Cosines exactly +-1 and within 1e-7 of them: finite at the cosine level, clamping is exact") {
  const int B = 8, C = 3;
  const double values[B] = {1.0, -1.0, 1.0 - 1e-7, -1.0 + 1e-7, 1.0 - 1e-12, -1.0 + 1e-12, 1.0 + 5e-4, -1.0 - 5e-4};
  Mat<double> cos(B, C);
  Eigen::VectorXi labels(B);
  for (int i = 0; i < B; ++i) {
    labels(i) = i % C;
    for (int j = 0; j < C; ++j) cos(i, j) = j == labels(i) ? values[i] : (j % 2 ? -values[i] : 0.3);
  }
  Mat<double> clamped = cos.cwiseMax(-1.0).cwiseMin(1.0);
  const Eigen::VectorXd scales = Eigen::VectorXd::LinSpaced(B, 0.5, 40.0);
  auto check = [&](const auto& policy, const auto& cs, const auto& cl, const auto& sc) {
    using T = typename std::decay_t<decltype(policy)>::value_type;
    Mat<T> dcos(B, C), dcos_cl(B, C);
    ml::Vector<T> ds(B), ds_cl(B);
    const T loss = ml::cosine_forward_backward(policy, cs, labels, sc, dcos, ds);
    CHECK(std::isfinite(loss));
    CHECK(dcos.allFinite());
    CHECK(ds.allFinite());
    // Values up to 1e-3 beyond +-1 are clamped: the result is that of the clamped matrix.
    const T loss_cl = ml::cosine_forward_backward(policy, cl, labels, sc, dcos_cl, ds_cl);
    CHECK(loss == loss_cl);
    CHECK(dcos == dcos_cl);
    CHECK(ds == ds_cl);
  };
  const Mat<float> cosf = cos.cast<float>(), clampedf = clamped.cast<float>();
  const Eigen::VectorXf scalesf = scales.cast<float>();
  for_each_policy<double>(64.0, [&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    check(policy, cos, clamped, scales);
  });
  for_each_policy<float>(64.f, [&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    check(policy, cosf, clampedf, scalesf);
  });
}

TEST_CASE("Labels 0 and C - 1: reversing the class order gives the same loss and gradients") {
  const Index C = 7;
  Case c = random_case(4, 5, C, 305);
  c.labels << 0, static_cast<int>(C - 1), 0, static_cast<int>(C - 1);
  const Mat<double> Wrev = c.W.colwise().reverse();
  Eigen::VectorXi rev = c.labels;
  for (Index i = 0; i < rev.size(); ++i) rev(i) = static_cast<int>(C - 1) - c.labels(i);
  for_each_policy<double>(30.0, [&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    const auto a = ml::forward_backward(policy, c.X, c.W, c.labels);
    const auto b = ml::forward_backward(policy, c.X, Wrev, rev);
    CHECK(rel_error(a.loss, b.loss) < 1e-12);
    CHECK(rel_error(a.dX, b.dX) < 1e-12);
    CHECK(rel_error(a.dW, Mat<double>(b.dW.colwise().reverse()), 1e-300) < 1e-12);
  });
}

TEST_CASE("C = 1: every policy gives loss 0 and zero gradients (dense and cosine level)") {
  const Case c = random_case(5, 4, 1, 306);
  const Mat<double> cos = (c.X.rowwise().normalized() * c.W.rowwise().normalized().transpose()).eval();
  const Eigen::VectorXd scales = c.X.rowwise().norm();
  auto check = [&](const auto& policy, const auto& X, const auto& W, const auto& cs, const auto& sc) {
    using T = typename std::decay_t<decltype(policy)>::value_type;
    const auto r = ml::forward_backward(policy, X, W, c.labels);
    CHECK(r.loss == T(0));
    CHECK(r.dX.isZero(0));
    CHECK(r.dW.isZero(0));
    Mat<T> dcos(cs.rows(), 1);
    ml::Vector<T> ds(cs.rows());
    CHECK(ml::cosine_forward_backward(policy, cs, c.labels, sc, dcos, ds) == T(0));
    CHECK(dcos.isZero(0));
    CHECK(ds.isZero(0));
  };
  const Mat<float> Xf = c.X.cast<float>(), Wf = c.W.cast<float>(), cosf = cos.cast<float>();
  const Eigen::VectorXf scalesf = scales.cast<float>();
  for_each_policy<double>(64.0, [&](const char* label, const auto& p) {
    const std::string name = label;
    CAPTURE(name);
    check(p, c.X, c.W, cos, scales);
  });
  for_each_policy<float>(64.f, [&](const char* label, const auto& p) {
    const std::string name = label;
    CAPTURE(name);
    check(p, Xf, Wf, cosf, scalesf);
  });
}

TEST_CASE("C = 2, B = 1: every policy against L = log(1 + exp(S (c_other - f(t))))") {
  for (double t : {0.83, 0.31, -0.27, -0.74, -0.97}) {
    const Case c = case_with_targets({t}, 6, 2, 307);
    const double co = c.X.row(0).normalized().dot(c.W.row(1).normalized());
    const double tt = c.X.row(0).normalized().dot(c.W.row(0).normalized());
    const double x_norm = c.X.row(0).norm();
    for_each_policy<double>(24.0, [&](const char* label, const auto& policy) {
      const std::string name = label;
      CAPTURE(name);
      CAPTURE(t);
      const double S = scale_of(policy, x_norm);
      const double f = policy.row(tt, 0).target.value;
      const auto r = ml::forward_backward(policy, c.X, c.W, c.labels);
      CHECK(r.loss == doctest::Approx(std::log1p(std::exp(S * (co - f)))).epsilon(1e-11));
    });
  }
}

TEST_CASE("B = 1 and D = 1: every policy finite, fixed scales give zero gradients, feature norm a radial dX") {
  Mat<double> X(1, 1), W(3, 1);
  X << -2.5;
  W << 1.0, -3.0, 0.25;
  Eigen::VectorXi y(1);
  y << 1;  // x is parallel to w_1 (t = +1); w_0, w_2 are at c = -1
  for_each_policy<double>(30.0, [&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    const auto r = ml::forward_backward(policy, X, W, y);
    REQUIRE(finite(r));
    CHECK(r.dW.isZero(1e-12));  // no tangent direction on the line
    if (!policy.scale_is_feature_norm()) CHECK(r.dX.isZero(1e-12));
  });
  // Feature norm: dL/dx = dL/d|x| * sign(x); here the target wins, so the loss falls as |x| grows.
  const auto r = ml::forward_backward(ml::SphereFace<double>{1, 0.0}, X, W, y);
  CHECK(r.dX(0, 0) > 0);  // x < 0: growing |x| means decreasing x
  const Mat<float> Xf = X.cast<float>(), Wf = W.cast<float>();
  for_each_policy<float>(30.f, [&](const char* label, const auto& policy) {
    const std::string name = label;
    CAPTURE(name);
    CHECK(finite(ml::forward_backward(policy, Xf, Wf, y)));
  });
}

TEST_CASE("Row norms from 1e-20 to 1e20 (X and W): fixed-scale policies are scale-invariant") {
  const Case c = random_case(6, 5, 6, 308);
  const double scale[] = {1e-20, 1e-10, 1e-3, 1e3, 1e10, 1e20};
  Mat<double> Xs = c.X, Ws = c.W;
  for (Index i = 0; i < 6; ++i) Xs.row(i) *= scale[i];
  for (Index j = 0; j < 6; ++j) Ws.row(j) *= scale[5 - j];
  const Mat<float> Xsf = Xs.cast<float>(), Wsf = Ws.cast<float>();
  // dL/dx scales as 1/|x|: compare |x_i| dX_i and |w_j| dW_j with the unscaled problem.
  auto rescaled = [&](const auto& r) {
    Mat<double> gx = r.dX.template cast<double>(), gw = r.dW.template cast<double>();
    for (Index i = 0; i < 6; ++i) gx.row(i) *= scale[i];
    for (Index j = 0; j < 6; ++j) gw.row(j) *= scale[5 - j];
    return std::make_pair(gx, gw);
  };
  for_each_policy<double>(64.0, [&](const char* label, const auto& policy) {
    const std::string name = label;
    if (policy.scale_is_feature_norm()) return;
    CAPTURE(name);
    const auto ref = ml::forward_backward(policy, c.X, c.W, c.labels);
    const auto r = ml::forward_backward(policy, Xs, Ws, c.labels);
    REQUIRE(finite(r));
    const auto [gx, gw] = rescaled(r);
    CHECK(rel_error(r.loss, ref.loss) < 1e-12);
    CHECK(rel_error(gx, ref.dX) < 1e-10);
    CHECK(rel_error(gw, ref.dW) < 1e-10);
  });
  for_each_policy<float>(64.f, [&](const char* label, const auto& policy) {
    const std::string name = label;
    if (policy.scale_is_feature_norm()) return;
    CAPTURE(name);
    const auto ref = ml::forward_backward(in_double(policy), c.X, c.W, c.labels);
    const auto r = ml::forward_backward(policy, Xsf, Wsf, c.labels);
    REQUIRE(finite(r));
    const auto [gx, gw] = rescaled(r);
    CHECK(std::fabs(double(r.loss) - ref.loss) <= 1e-4 * std::max(1.0, ref.loss));
    CHECK(rel_error(gx, ref.dX, 1e-3) < 1e-3);
    CHECK(rel_error(gw, ref.dW, 1e-3) < 1e-3);
  });
}

TEST_CASE("SphereFace feature norm with |x| from 1e-20 to 1e20 and |w| = 1: finite, logits of 1e20 saturate") {
  // S_i = |x_i|: with |x| = 1e20 the logits are 1e20 c_ij; the softmax is one-hot, the row's
  // loss is 1e20 (max_j c_ij - f(t)) (0 when the target wins), dL/dS = max_j c - f(t) is O(1)
  // and dX stays O(1): the exact values are representable and the library returns them.
  Case c = case_with_targets({0.9, -0.2, 0.4, 0.95}, 6, 5, 309);
  const double scale[] = {1e-20, 1e20, 1.0, 1e20};
  for (Index j = 0; j < c.W.rows(); ++j) c.W.row(j).normalize();
  for (Index i = 0; i < 4; ++i) c.X.row(i) = c.X.row(i).normalized() * scale[i];
  const Mat<float> Xf = c.X.cast<float>(), Wf = c.W.cast<float>();
  for (int m = 1; m <= 5; ++m) {
    CAPTURE(m);
    const ml::SphereFace<double> pd{m, 5.0};
    const ml::SphereFace<float> pf{m, 5.f};
    const auto rd = ml::forward_backward(pd, c.X, c.W, c.labels);
    const auto rf = ml::forward_backward(pf, Xf, Wf, c.labels);
    CHECK(finite(rd));
    CHECK(finite(rf));
    CHECK(double(rf.loss) == doctest::Approx(rd.loss).epsilon(1e-5));
    // Sample 1 (|x| = 1e20, t = -0.2) loses to another class: its row loss, about
    // 1e20 (max_j c - f(t)), dominates the batch loss.
    CHECK(rd.loss > 1e18);
    CHECK(rd.dX.cwiseAbs().maxCoeff() < 1e3);
  }
}
