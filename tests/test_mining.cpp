// Mining policies (SV-, MV-Softmax, CurricularFace, AMM-Softmax): finite differences away from
// mask boundaries, the mask treated as a constant, reductions, hyper-parameter errors, tau.
#include <doctest/doctest.h>

#include <string>

#include "support.hpp"

using namespace mltest;

namespace {

constexpr double pi = 3.141592653589793;

// Cosines of a case, computed here.
Mat<double> cosines(const Case& c) {
  return (c.X.rowwise().normalized() * c.W.rowwise().normalized().transpose()).eval();
}

// Threshold of the hard-vector mask for an AM (t - m) or Arc (raw cos(theta + m)) target.
double am_threshold(double t, double m) { return t - m; }
double arc_threshold(double t, double m) { return std::cos(std::acos(t) + m); }

// Hard and easy counts of non-targets, and the smallest distance of a non-target cosine to its
// row's threshold (finite differences are meaningful only away from the mask boundary).
struct MaskStats {
  int hard = 0, easy = 0;
  double min_gap = 1e300;
};
template <typename Thr>
MaskStats mask_stats(const Case& c, Thr thr) {
  const Mat<double> cos = cosines(c);
  MaskStats st;
  for (Index i = 0; i < cos.rows(); ++i) {
    const double th = thr(cos(i, c.labels(i)));
    for (Index j = 0; j < cos.cols(); ++j) {
      if (j == c.labels(i)) continue;
      (cos(i, j) > th ? st.hard : st.easy)++;
      st.min_gap = std::min(st.min_gap, std::fabs(cos(i, j) - th));
    }
  }
  return st;
}

template <typename P>
void check_fd(const P& policy, Case c) {
  const auto r = ml::forward_backward(policy, c.X, c.W, c.labels);
  auto loss = [&] { return ml::forward_backward(policy, c.X, c.W, c.labels).loss; };
  CHECK(rel_error(r.dX, fd_gradient(c.X, loss)) < 1e-6);
  CHECK(rel_error(r.dW, fd_gradient(c.W, loss)) < 1e-6);
}

const std::vector<double> spread = {0.95, 0.7, 0.45, 0.1, -0.3, -0.75, 0.3, -0.05};

// A case whose non-targets keep >= 1e-3 from the mask threshold and include hard and easy ones.
template <typename Thr>
Case masked_case(Thr thr, Index D, Index C, std::uint64_t seed) {
  for (std::uint64_t k = 0; k < 200; ++k) {
    Case c = case_with_targets(spread, D, C, seed + 1000 * k);
    const MaskStats st = mask_stats(c, thr);
    if (st.hard > 0 && st.easy > 0 && st.min_gap > 1e-3) return c;
  }
  FAIL("no suitable case");
  return {};
}

}  // namespace

TEST_CASE("MV-Softmax and SV-Softmax gradients (AM and Arc targets, both variants)") {
  const double m = 0.35;
  const Case am = masked_case([&](double t) { return am_threshold(t, m); }, 6, 12, 1);
  const Case arc = masked_case([&](double t) { return arc_threshold(t, 0.5); }, 6, 12, 2);
  for (auto variant : {ml::MVVariant::adaptive, ml::MVVariant::fixed}) {
    CAPTURE(variant == ml::MVVariant::adaptive);
    check_fd(ml::MVSoftmax<double>{32, m, 1.2, ml::MarginTarget::additive_cosine, variant}, am);
    check_fd(ml::MVSoftmax<double>{32, m, 1.12, ml::MarginTarget::additive_cosine, variant, ml::Fallback::easy_margin}, am);
    check_fd(ml::MVSoftmax<double>{32, 0.5, 1.2, ml::MarginTarget::additive_angular, variant}, arc);
    check_fd(ml::MVSoftmax<double>{32, 0.5, 1.2, ml::MarginTarget::additive_angular, variant, ml::Fallback::hard_threshold}, arc);
  }
  check_fd(ml::SVSoftmax<double>{30, m, 1.2}, am);
  check_fd(ml::SVSoftmax<double>{30, 0.5, 1.3, ml::MarginTarget::additive_angular}, arc);
  const Case plain = masked_case([&](double t) { return t; }, 6, 12, 3);
  check_fd(ml::SVSoftmax<double>{30, 0.0, 1.2}, plain);
}

TEST_CASE("CurricularFace and AMM-Softmax gradients") {
  const Case arc = masked_case([&](double t) { return arc_threshold(t, 0.5); }, 6, 12, 4);
  for (double tau : {0.0, 0.3, 0.6}) check_fd(fixed_tau(ml::CurricularFace<double>{64, 0.5, tau}), arc);
  // AMM: keep the hard non-targets' angles away from m_h too (theta = m_h is where h saturates).
  const Mat<double> cos = cosines(arc);
  for (Index k = 0; k < cos.size(); ++k) REQUIRE(std::fabs(std::acos(cos.data()[k]) - 0.1) > 1e-3);
  check_fd(ml::AMMSoftmax<double>{64, 0.5, 0.1}, arc);
  check_fd(ml::AMMSoftmax<double>{32, 0.5, 0.3, ml::Fallback::none}, arc);
}

TEST_CASE("The mask is a constant: dL/dcos has no cross term through the target") {
  // At the cosine level, computed here from the definition: z = s phi, p = softmax(z),
  // dL/dc_ij = (p_ij - delta) s phi'_ij / B, with phi' = t on hard entries (adaptive MV) and
  // the target's slope only on the target: what every reference implementation's autograd
  // gives with the mask computed under no_grad.
  const Index B = 3, C = 5;
  Mat<double> cos(B, C);
  cos << 0.6, 0.4, 0.1, -0.2, 0.3,  //
      -0.1, 0.2, 0.5, -0.4, 0.05,   //
      0.3, -0.6, 0.25, 0.8, -0.1;
  Eigen::VectorXi y(B);
  y << 0, 1, 3;
  const double s = 32, m = 0.35, t = 1.2;
  const auto r = ml::cosine_forward_backward(ml::MVSoftmax<double>{s, m, t}, cos, y);
  double loss = 0;
  int hard = 0;
  for (Index i = 0; i < B; ++i) {
    const double ty = cos(i, y(i)), thr = ty - m;
    Eigen::VectorXd z(C), slope(C);
    for (Index j = 0; j < C; ++j) {
      const bool h = j != y(i) && cos(i, j) > thr;
      hard += h;
      z(j) = s * (j == y(i) ? ty - m : (h ? t * cos(i, j) + t - 1 : cos(i, j)));
      slope(j) = h ? t : 1.0;
    }
    const double mx = z.maxCoeff(), lse = mx + std::log((z.array() - mx).exp().sum());
    loss += (lse - z(y(i))) / B;
    for (Index j = 0; j < C; ++j)
      CHECK(r.dcos(i, j) == doctest::Approx((std::exp(z(j) - lse) - (j == y(i))) * s * slope(j) / B).epsilon(1e-12));
  }
  CHECK(hard >= 3);
  CHECK(r.loss == doctest::Approx(loss).epsilon(1e-12));
}

TEST_CASE("Reductions hold to 1e-12: t = 1, m_h = 0, no hard vectors") {
  Case c = case_with_targets({0.9, 0.4, -0.2, -0.7, 0.05, 0.6}, 6, 10, 5);
  auto same = [&](const auto& a, const auto& b) {
    const auto ra = ml::forward_backward(a, c.X, c.W, c.labels);
    const auto rb = ml::forward_backward(b, c.X, c.W, c.labels);
    CHECK(rel_error(ra.loss, rb.loss) < 1e-12);
    CHECK(rel_error(ra.dX, rb.dX) < 1e-12);
    CHECK(rel_error(ra.dW, rb.dW) < 1e-12);
  };
  using ml::MarginTarget;
  for (auto v : {ml::MVVariant::adaptive, ml::MVVariant::fixed}) {
    same(ml::MVSoftmax<double>{32, 0.35, 1.0, MarginTarget::additive_cosine, v}, ml::CosFace<double>{32, 0.35});
    for (auto fb : {ml::Fallback::hard_threshold, ml::Fallback::easy_margin, ml::Fallback::none})
      same(ml::MVSoftmax<double>{32, 0.5, 1.0, MarginTarget::additive_angular, v, fb}, ml::ArcFace<double>{32, 0.5, fb});
  }
  same(ml::MVSoftmax<double>{32, 0.35, 1.0, MarginTarget::additive_cosine, ml::MVVariant::adaptive, ml::Fallback::none, true},
       ml::CosFace<double>{32, 0.35, true});
  same(ml::SVSoftmax<double>{30, 0.35, 1.0}, ml::CosFace<double>{30, 0.35});
  same(ml::SVSoftmax<double>{30, 0.0, 1.0}, ml::NormFace<double>{30});
  for (auto fb : {ml::Fallback::hard_threshold, ml::Fallback::none})
    same(ml::AMMSoftmax<double>{64, 0.5, 0.0, fb}, ml::ArcFace<double>{64, 0.5, fb});

  // CurricularFace without hard vectors is ArcFace, whatever tau; with them it is not.
  Case easy = case_with_targets({0.99, 0.995, 0.985}, 8, 6, 6);
  REQUIRE(mask_stats(easy, [](double t) { return arc_threshold(t, 0.5); }).hard == 0);
  const auto cf = ml::forward_backward(fixed_tau(ml::CurricularFace<double>{64, 0.5, 0.7}), easy.X, easy.W, easy.labels);
  const auto af = ml::forward_backward(ml::ArcFace<double>{64, 0.5}, easy.X, easy.W, easy.labels);
  CHECK(rel_error(cf.loss, af.loss) < 1e-12);
  CHECK(rel_error(cf.dX, af.dX) < 1e-12);
  CHECK(rel_error(cf.dW, af.dW) < 1e-12);
  REQUIRE(mask_stats(c, [](double t) { return arc_threshold(t, 0.5); }).hard > 0);
  const auto cf2 = ml::forward_backward(fixed_tau(ml::CurricularFace<double>{64, 0.5, 0.7}), c.X, c.W, c.labels);
  const auto af2 = ml::forward_backward(ml::ArcFace<double>{64, 0.5}, c.X, c.W, c.labels);
  CHECK(rel_error(cf2.loss, af2.loss) > 1e-6);
}

TEST_CASE("MV-Softmax parameterisations: the official increment t' and easy margin") {
  CHECK(ml::mv_t_from_increment(0.2) == doctest::Approx(1.2));
  // (t' + 1) c + t' of the official code equals t c + t - 1 with t = t' + 1.
  const ml::MVSoftmax<double> mv{32, 0.35, ml::mv_t_from_increment(0.2)};
  const auto row = mv.row(0.5, 0);
  CHECK(row.threshold == doctest::Approx(0.15));
  CHECK(mv.non_target(0.3, row).value == doctest::Approx(1.2 * 0.3 + 0.2));
  CHECK(mv.non_target(0.3, row).slope == doctest::Approx(1.2));
  CHECK(mv.non_target(0.1, row).value == 0.1);
  // Easy margin of the official code (AM target): no margin where t <= 0; the mask still
  // compares with t - m.
  ml::MVSoftmax<double> easy = mv;
  easy.fallback = ml::Fallback::easy_margin;
  CHECK(easy.row(-0.2, 0).target.value == -0.2);
  CHECK(easy.row(-0.2, 0).threshold == doctest::Approx(-0.55));
  CHECK(easy.row(0.2, 0).target.value == doctest::Approx(0.2 - 0.35));
  // FaceX-Zoo's switch: margin only where t > m.
  ml::MVSoftmax<double> fxz = mv;
  fxz.conditional_margin = true;
  CHECK(fxz.row(0.2, 0).target.value == 0.2);
  CHECK(fxz.row(0.5, 0).target.value == doctest::Approx(0.15));
  // Arc target: the mask uses the raw cos(theta + m) even where the fallback applies.
  const ml::MVSoftmax<double> arc{32, 0.5, 1.2, ml::MarginTarget::additive_angular, ml::MVVariant::adaptive,
                                  ml::Fallback::hard_threshold};
  const double t = -0.95;  // below cos(pi - 0.5): the target falls back to t - m sin m
  CHECK(arc.row(t, 0).target.value == doctest::Approx(t - 0.5 * std::sin(0.5)));
  CHECK(arc.row(t, 0).threshold == doctest::Approx(std::cos(std::acos(t) + 0.5)));
}

TEST_CASE("AMM-Softmax hard-vector transform") {
  const ml::AMMSoftmax<double> amm{64, 0.5, 0.2};
  const auto row = amm.row(0.1, 0);  // threshold cos(acos(0.1) + 0.5) < 0.1
  CHECK(row.threshold == doctest::Approx(std::cos(std::acos(0.1) + 0.5)));
  const double c = 0.3;
  CHECK(amm.non_target(c, row).value == doctest::Approx(std::cos(std::acos(c) - 0.2)));
  CHECK(amm.non_target(c, row).slope == doctest::Approx(std::sin(std::acos(c) - 0.2) / std::sin(std::acos(c))));
  // theta <= m_h: the angle clamps at 0, h = 1, slope 0.
  CHECK(amm.non_target(std::cos(0.1), row).value == 1.0);
  CHECK(amm.non_target(std::cos(0.1), row).slope == 0.0);
  CHECK(amm.non_target(-0.9, row).value == -0.9);  // easy
  CHECK(std::isfinite(amm.non_target(-1.0, amm.row(-1.0, 0)).slope));
}

TEST_CASE("CurricularFace tau: target_cosines and the manual update follow the official code") {
  Case c = random_case(6, 5, 7, 7);
  ml::CurricularFace<double> cf{64, 0.5};
  CHECK(cf.tau == 0.0);
  const Eigen::VectorXd t = ml::target_cosines(c.X, c.W, c.labels);
  for (Index i = 0; i < 6; ++i)
    CHECK(t(i) == doctest::Approx(c.X.row(i).normalized().dot(c.W.row(c.labels(i)).normalized())).epsilon(1e-14));
  cf.update_tau(t);
  CHECK(cf.tau == doctest::Approx(0.01 * t.mean()).epsilon(1e-14));
  cf.update_tau_with_mean(0.5);
  CHECK(cf.tau == doctest::Approx(0.01 * 0.5 + 0.99 * 0.01 * t.mean()).epsilon(1e-14));
  // With the engine's update off, a forward leaves tau alone; saving and restoring is copying it.
  cf.update_tau_in_forward = false;
  const double tau = cf.tau;
  const double loss = ml::forward_backward(cf, c.X, c.W, c.labels).loss;
  CHECK(cf.tau == tau);
  ml::CurricularFace<double> restored{64, 0.5, tau};
  restored.update_tau_in_forward = false;
  CHECK(ml::forward_backward(restored, c.X, c.W, c.labels).loss == loss);
}

TEST_CASE("CurricularFace tau is updated by each forward, before use, exactly as the manual update") {
  const Case c = random_case(9, 6, 23, 17);
  // By hand (the official order: update from this batch's target cosines, then the loss) ...
  ml::CurricularFace<double> manual{64, 0.5, 0.2};
  manual.update_tau_in_forward = false;
  // ... and by the engine, in every forward entry point.
  ml::CurricularFace<double> engine{64, 0.5, 0.2};
  ml::CurricularFace<double> chunked{64, 0.5, 0.2}, split{64, 0.5, 0.2}, cosine{64, 0.5, 0.2};
  ml::Options blocks;
  blocks.class_block = 5;
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    manual.update_tau(ml::target_cosines(c.X, c.W, c.labels));
    const auto want = ml::forward_backward(manual, c.X, c.W, c.labels);
    const auto got = ml::forward_backward(engine, c.X, c.W, c.labels);
    CHECK(engine.tau == manual.tau);
    CHECK(got.loss == want.loss);
    CHECK(got.dX == want.dX);
    CHECK(got.dW == want.dW);
    const auto got_chunked = ml::forward_backward(chunked, c.X, c.W, c.labels, blocks);
    CHECK(chunked.tau == manual.tau);
    CHECK(rel_error(got_chunked.loss, want.loss) < 1e-13);
    ml::Workspace<double> ws;
    const auto split_fwd = ml::forward(split, c.X, c.W, c.labels, ws);
    Mat<double> split_dX(c.X.rows(), c.X.cols()), split_dW(c.W.rows(), c.W.cols());
    ml::backward(split_fwd, 1.0, {split_dX, split_dW});  // the context holds the updated policy
    CHECK(split.tau == manual.tau);
    CHECK(split_fwd.policy().tau == manual.tau);
    CHECK(split_fwd.loss() == want.loss);
    CHECK(split_dX == want.dX);
    // The cosine level updates from the clamped target cosines it is given.
    const Mat<double> cos = (c.X.rowwise().normalized() * c.W.rowwise().normalized().transpose()).eval();
    ml::cosine_forward_backward(cosine, cos, c.labels);
    CHECK(cosine.tau == doctest::Approx(manual.tau).epsilon(1e-14));
  }
  CHECK(engine.tau != 0.2);  // it moved
}

TEST_CASE("CurricularFace with the update on needs a modifiable policy -- off, any policy") {
  const Case c = random_case(4, 5, 6, 18);
  auto message = [&](auto&& call) {
    try {
      call();
    } catch (const ml::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string temporary = message([&] { ml::forward_backward(ml::CurricularFace<double>{}, c.X, c.W, c.labels); });
  CHECK(temporary.find("CurricularFace: update_tau_in_forward = true: the forward updates tau in the policy you pass") !=
        std::string::npos);
  CHECK(temporary.find("set update_tau_in_forward = false") != std::string::npos);
  const ml::CurricularFace<double> constant{};
  CHECK(message([&] { ml::forward_backward(constant, c.X, c.W, c.labels); }) == temporary);
  Mat<double> dcos(4, 6);
  const Mat<double> cos = Mat<double>::Constant(4, 6, 0.25);
  CHECK(message([&] { ml::cosine_forward_backward(constant, cos, c.labels, dcos); }) == temporary);
  // ClassMargins forwards its base's state hook, and so its error.
  const Eigen::VectorXd m = Eigen::VectorXd::Constant(6, 0.3);
  CHECK(message([&] { ml::forward_backward(ml::class_margins(ml::CurricularFace<double>{}, m), c.X, c.W, c.labels); }) ==
        temporary);
  auto per_class = ml::class_margins(ml::CurricularFace<double>{}, m);
  ml::forward_backward(per_class, c.X, c.W, c.labels);
  CHECK(per_class.base.tau != 0.0);
  CHECK(message([&] { ml::forward_backward(fixed_tau(ml::CurricularFace<double>{}), c.X, c.W, c.labels); }).empty());
}

TEST_CASE("Mining policies reject bad hyper-parameters") {
  Case c = random_case(2, 3, 4, 8);
  auto throws = [&](const auto& p, const char* part) {
    try {
      ml::forward_backward(p, c.X, c.W, c.labels);
      FAIL("no exception");
    } catch (const ml::invalid_argument& e) {
      CAPTURE(std::string(e.what()));
      CHECK(std::string(e.what()).find(part) != std::string::npos);
    }
  };
  throws(ml::MVSoftmax<double>{32, 0.35, 0.2}, "t = 0.2 must be >= 1");
  throws(ml::SVSoftmax<double>{30, 0.0, 0.9}, "t = 0.9 must be >= 1");
  throws(ml::MVSoftmax<double>{32, -0.35, 1.2}, "m = -0.35");
  throws(ml::SVSoftmax<double>{30, -0.1, 1.2}, "m = -0.1");
  throws(ml::MVSoftmax<double>{32, 0.35, 1.2, ml::MarginTarget::additive_cosine, ml::MVVariant::adaptive,
                               ml::Fallback::hard_threshold},
         "additive angular target only");
  throws(ml::MVSoftmax<double>{32, 0.5, 1.2, ml::MarginTarget::additive_angular, ml::MVVariant::adaptive,
                               ml::Fallback::none, true},
         "conditional_margin");
  throws(ml::CurricularFace<double>{64, -0.5}, "m = -0.5");
  throws(ml::CurricularFace<double>{64, 0.5, 0.0, 1.5}, "momentum = 1.5");
  throws(ml::AMMSoftmax<double>{64, 0.5, -0.1}, "m_h = -0.1");
  throws(ml::AMMSoftmax<double>{0, 0.5, 0.1}, "s = 0");
  ml::CurricularFace<double> cf;
  CHECK_THROWS_AS(cf.update_tau_with_mean(std::numeric_limits<double>::quiet_NaN()), ml::invalid_argument);
}
