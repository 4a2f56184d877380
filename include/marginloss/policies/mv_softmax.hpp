// MV-Softmax (Wang et al., "Mis-classified Vector Guided Softmax Loss for Face Recognition",
// AAAI 2020; docs/formulas.md §5): the margined target of CosFace (MV-AM) or ArcFace (MV-Arc),
// and hard non-targets (c_ij above the margined target) emphasised:
//   adaptive: h(c) = t c + t - 1,  h' = t        fixed: h(c) = c + t - 1,  h' = 1
// t >= 1 as in the SV-Softmax paper and FaceX-Zoo (mv_weight = 1.12); t = 1 is the plain
// margin loss. The official code (SV-X-Softmax) writes the increment t' = t - 1 instead,
// (t' + 1) c + t' with t' = 0.2: convert with mv_t_from_increment(0.2) = 1.2.
// The official code also turns easy margin on by default (fallback = Fallback::easy_margin
// here); the default below is the paper's form without it.
#pragma once

#include "../detail/mining_checks.hpp"
#include "../detail/mining_target.hpp"
#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

enum class MVVariant { adaptive, fixed };

// The official code's increment t' to this library's t.
template <typename T>
constexpr T mv_t_from_increment(T increment) {
  return increment + T(1);
}

namespace detail {
template <typename T>
MARGINLOSS_HD inline ValueSlope<T> mv_non_target(T c, const MiningRow<T>& row, T t, MVVariant variant) {
  if (!(c > row.threshold)) return {c, T(1)};
  return variant == MVVariant::adaptive ? ValueSlope<T>{t * c + t - T(1), t} : ValueSlope<T>{c + t - T(1), T(1)};
}
}  // namespace detail

template <typename T>
struct MVSoftmax {
  using value_type = T;
  using row_type = detail::MiningRow<T>;
  static constexpr bool plain_non_target = false;
  static constexpr const char* name = "MVSoftmax";

  T s = T(32);     // paper and official code
  T m = T(0.35);   // MV-AM; MV-Arc used 0.5 in the SV-Softmax paper
  T t = T(1.2);    // official t' = 0.2; FaceX-Zoo uses 1.12
  MarginTarget target = MarginTarget::additive_cosine;
  MVVariant variant = MVVariant::adaptive;
  // Arc target: as ArcFace. AM target: none (t - m) or easy_margin (t - m only where t > 0).
  Fallback fallback = Fallback::none;
  bool conditional_margin = false;  // AM target: t - m only where t > m (FaceX-Zoo MV-AM)
  Gradient gradient = Gradient::exact;  // of the Arc target

  void validate() const {
    detail::check_mining_target(name, s, m, target, fallback, conditional_margin);
    detail::check_enums(name, fallback, gradient);
    if (static_cast<int>(target) < 0 || static_cast<int>(target) > 1 || static_cast<int>(variant) < 0 ||
        static_cast<int>(variant) > 1)
      detail::fail(name, ": target or variant is not a valid enumerator");
    detail::require_finite(name, "t", t);
    if (!(t >= T(1)))
      detail::fail(name, ": t = ", t, " must be >= 1 (t = 1 is the plain margin loss; the official code's t' = ", t,
                   " is t = ", t + T(1), " here, see mv_t_from_increment)");
  }

  MARGINLOSS_HD row_type row(T tc, Index /*label*/) const {
    return detail::mining_target(tc, m, target, fallback, conditional_margin, gradient);
  }
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type& r) const { return detail::mv_non_target(c, r, t, variant); }
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
