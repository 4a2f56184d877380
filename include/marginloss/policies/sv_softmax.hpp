// SV-Softmax (Wang et al., "Support Vector Guided Softmax Loss for Face Recognition",
// arXiv 1812.11317; docs/formulas.md §5): hard non-targets ("support vectors", c_ij above the
// margined target) get h(c) = t c + t - 1 (h' = t, t >= 1). The original uses no margin
// (m = 0); SV-AM (m = 0.35) and SV-Arc (target = additive_angular, m = 0.5) add one. Published
// setting: s = 30, t = 1.2 (t > 1.4 may not converge). With a margin this is MV-Softmax's
// adaptive variant, and it shares its code.
#pragma once

#include "mv_softmax.hpp"

MARGINLOSS_NAMESPACE_BEGIN

template <typename T>
struct SVSoftmax {
  using value_type = T;
  using row_type = detail::MiningRow<T>;
  static constexpr bool plain_non_target = false;
  static constexpr const char* name = "SVSoftmax";

  T s = T(30);
  T m = T(0);
  T t = T(1.2);
  MarginTarget target = MarginTarget::additive_cosine;
  Fallback fallback = Fallback::none;  // Arc target: as ArcFace; AM target: none or easy_margin
  Gradient gradient = Gradient::exact;

  void validate() const {
    detail::check_mining_target(name, s, m, target, fallback, false);
    detail::check_enums(name, fallback, gradient);
    if (static_cast<int>(target) < 0 || static_cast<int>(target) > 1)
      detail::fail(name, ": target = ", static_cast<int>(target), " is not a MarginTarget value");
    detail::require_finite(name, "t", t);
    if (!(t >= T(1))) detail::fail(name, ": t = ", t, " must be >= 1 (t = 1 is the plain softmax)");
  }

  MARGINLOSS_HD row_type row(T tc, Index /*label*/) const {
    return detail::mining_target(tc, m, target, fallback, false, gradient);
  }
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type& r) const {
    return detail::mv_non_target(c, r, t, MVVariant::adaptive);
  }
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
