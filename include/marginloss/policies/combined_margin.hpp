// The combined margin of insightface (ArcFace paper, Eq. 4; formulas.md §3):
//   z_iy = s (cos(m1 theta_iy + m2) - m3),  z_ij = s c_ij.
// (1, 0, 0) is NormFace, (1, m, 0) ArcFace, (1, 0, m) CosFace; the original MXNet "combined"
// preset is (1, 0.3, 0.2) with s = 64. Unlike arcface_torch's CombinedMarginLoss (which runs
// any m3 > 0 triple as plain CosFace), every triple is computed as written.
#pragma once

#include "../detail/angular_margin.hpp"
#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// The combined margin of insightface (ArcFace paper, Eq. 4):
/// z_iy = s (cos(m1 theta_iy + m2) - m3), z_ij = s c_ij. (1, 0, 0) is NormFace, (1, m, 0)
/// ArcFace, (1, 0, m) CosFace (docs/formulas.md §3).
template <typename T>
struct CombinedMargin {
  using value_type = T;  ///< float or double
  using row_type = detail::TargetRow<T>;  ///< once-per-row terms: the target f(t_i) and its slope
  static constexpr bool plain_non_target = true;  ///< h(c) = c: the engines skip non_target()
  static constexpr const char* name = "CombinedMargin";  ///< the policy's name in error messages

  T s = T(64);    ///< scale of the logits
  T m1 = T(1);    ///< multiplicative angular margin (SphereFace-like), > 0
  T m2 = T(0.3);  ///< additive angular margin (ArcFace), in [0, pi); 0.3 with m3 = 0.2: the MXNet preset
  T m3 = T(0.2);  ///< additive cosine margin (CosFace), >= 0
  /// Default: none, as in the only implementation of the general form (insightface MXNet).
  /// hard_threshold uses t - m2 sin(m2) - m3 where m1 theta + m2 > pi (ArcFace's rule when
  /// m1 = 1); easy_margin uses t - m3 where t <= 0.
  Fallback fallback = Fallback::none;
  Gradient gradient = Gradient::exact;  ///< exact derivative, or straight-through (slope 1)

  /// Throws invalid_argument unless s > 0, m1 > 0, 0 <= m2 < pi, m3 >= 0 and the enumerations
  /// hold valid values.
  void validate() const {
    detail::require_positive(name, "s", s);
    detail::check_enums(name, fallback, gradient);
    detail::require_positive(name, "m1", m1);
    detail::require_non_negative(name, "m2", m2);
    detail::require_non_negative(name, "m3", m3);
    if (!(m2 < T(detail::pi))) detail::fail(name, ": m2 = ", m2, " must be < pi");
  }

  /// f(t) = cos(m1 theta + m2) - m3, slope m1 sin(m1 theta + m2) / sin(theta); `fallback`
  /// where m1 theta + m2 > pi, `gradient` for the slope.
  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    return {detail::angular_margin(t, m1, m2, m3, fallback, gradient).target};
  }
  /// h(c) = c, slope 1.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
