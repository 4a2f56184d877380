// SV-Softmax (Wang et al., "Support Vector Guided Softmax Loss for Face Recognition",
// arXiv 1812.11317; docs/formulas.md §5): hard non-targets ("support vectors", c_ij above the
// margined target) get h(c) = t c + t - 1 (h' = t, t >= 1). The original uses no margin
// (m = 0); SV-AM (m = 0.35) and SV-Arc (target = additive_angular, m = 0.5) add one. Published
// setting: s = 30, t = 1.2 (t > 1.4 may not converge). With a margin this is MV-Softmax's
// adaptive variant, and it shares its code.
#pragma once

#include "mv_softmax.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// SV-Softmax (Wang et al., arXiv 1812.11317; docs/formulas.md §5): hard non-targets
/// ("support vectors", c_ij above the margined target) get h(c) = t c + t - 1 (h' = t, t >= 1).
/// m = 0 is the original; SV-AM and SV-Arc add a margin (then it is MV-Softmax's adaptive
/// variant).
template <typename T>
struct SVSoftmax {
  using value_type = T;  ///< float or double
  using row_type = detail::MiningRow<T>;  ///< once-per-row terms: the target f(t_i), its slope and the hard threshold
  static constexpr bool plain_non_target = false;  ///< hard non-targets are transformed by non_target()
  static constexpr const char* name = "SVSoftmax";  ///< the policy's name in error messages

  T s = T(30);   ///< scale of the logits (published setting)
  T m = T(0);    ///< margin of the target: 0 in the original; SV-AM 0.35, SV-Arc 0.5
  T t = T(1.2);  ///< hard-vector weight, >= 1 (published setting; t > 1.4 may not converge)
  MarginTarget target = MarginTarget::additive_cosine;  ///< AM (CosFace) or Arc (ArcFace) target
  Fallback fallback = Fallback::none;  ///< Arc target: as ArcFace; AM target: none or easy_margin
  Gradient gradient = Gradient::exact;  ///< of the Arc target

  /// Throws invalid_argument unless s > 0, m >= 0 (< pi for the Arc target), t >= 1, the
  /// fallback fits the target and the enumerations hold valid values.
  void validate() const {
    detail::check_mining_target(name, s, m, target, fallback, false);
    detail::check_enums(name, fallback, gradient);
    detail::check_enum(name, "target", target);
    detail::require_finite(name, "t", t);
    if (!(t >= T(1))) detail::fail(name, ": t = ", t, " must be >= 1 (t = 1 is the plain softmax)");
  }
  /// The margins this policy accepts as `m` (ClassMargins checks each class's): [0, pi) for
  /// the additive angular target, finite and >= 0 for the additive cosine one.
  MARGINLOSS_HD bool margin_in_range(T v) const {
    return target == MarginTarget::additive_angular ? detail::angular_margin_ok(v) : detail::cosine_margin_ok(v);
  }

  /// f(t) = t - m (AM) or cos(theta + m) (Arc), and the hard threshold: t - m, or the raw
  /// cos(theta + m) whatever the fallback.
  MARGINLOSS_HD row_type row(T tc, Index /*label*/) const {
    return detail::mining_target(tc, m, target, fallback, false, gradient);
  }
  /// Hard (c above the threshold): h(c) = t c + t - 1, h' = t; otherwise h(c) = c.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type& r) const {
    return detail::mv_non_target(c, r, t, MVVariant::adaptive);
  }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
