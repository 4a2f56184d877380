// ArcFace (Deng et al., CVPR 2019): the additive angular margin (docs/formulas.md §3).
//   z_iy = s cos(theta_iy + m)  (with a fallback where theta + m > pi),  z_ij = s c_ij.
#pragma once

#include "../detail/angular_margin.hpp"
#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

template <typename T>
struct ArcFace {
  using value_type = T;
  using row_type = detail::TargetRow<T>;
  static constexpr bool plain_non_target = true;
  static constexpr const char* name = "ArcFace";

  T s = T(64);   // paper and insightface
  T m = T(0.5);  // paper and insightface
  // Default: the hard threshold of the official PyTorch ports (t - m sin m beyond pi - m).
  Fallback fallback = Fallback::hard_threshold;
  // Default: the true derivative. Gradient::straight_through reproduces insightface
  // arcface_torch since 2022-12 (margin applied under no_grad, derivative taken as 1).
  Gradient gradient = Gradient::exact;

  void validate() const {
    detail::require_positive(name, "s", s);
    detail::check_enums(name, fallback, gradient);
    detail::require_non_negative(name, "m", m);
    if (!(m < T(detail::pi))) detail::fail(name, ": m = ", m, " must be < pi");
  }

  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    return {detail::angular_margin(t, T(1), m, T(0), fallback, gradient).target};
  }
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
