// ArcFace (Deng et al., CVPR 2019): the additive angular margin (docs/formulas.md §3).
//   z_iy = s cos(theta_iy + m)  (with a fallback where theta + m > pi),  z_ij = s c_ij.
#pragma once

#include "../detail/angular_margin.hpp"
#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// ArcFace (Deng et al., CVPR 2019): the additive angular margin, z_iy = s cos(theta_iy + m)
/// (with a fallback where theta + m > pi), z_ij = s c_ij (docs/formulas.md §3).
template <typename T>
struct ArcFace {
  using value_type = T;  ///< float or double
  using row_type = detail::TargetRow<T>;  ///< once-per-row terms: the target f(t_i) and its slope
  static constexpr bool plain_non_target = true;  ///< h(c) = c: the engines skip non_target()
  static constexpr const char* name = "ArcFace";  ///< the policy's name in error messages

  T s = T(64);   ///< scale of the logits (paper and insightface)
  T m = T(0.5);  ///< angular margin in radians, in [0, pi) (paper and insightface)
  /// Default: the hard threshold of the official PyTorch ports (t - m sin m beyond pi - m).
  Fallback fallback = Fallback::hard_threshold;
  /// Default: the true derivative. Gradient::straight_through reproduces insightface
  /// arcface_torch since 2022-12 (margin applied under no_grad, derivative taken as 1).
  Gradient gradient = Gradient::exact;

  /// Throws invalid_argument unless s > 0, 0 <= m < pi and the enumerations hold valid values.
  void validate() const {
    detail::require_positive(name, "s", s);
    detail::check_enums(name, fallback, gradient);
    detail::require_non_negative(name, "m", m);
    if (!(m < T(detail::pi))) detail::fail(name, ": m = ", m, " must be < pi");
  }
  /// The margins this policy accepts as `m` (ClassMargins checks each class's): [0, pi).
  MARGINLOSS_HD bool margin_in_range(T v) const { return detail::angular_margin_ok(v); }

  /// f(t) = cos(theta + m) = t cos m - sin(theta) sin m (no arccos), slope
  /// sin(theta + m) / sin(theta); `fallback` where theta + m > pi, `gradient` for the slope.
  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    return {detail::angular_margin(t, T(1), m, T(0), fallback, gradient).target};
  }
  /// h(c) = c, slope 1.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
