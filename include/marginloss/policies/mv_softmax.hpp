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

/// How MV-Softmax emphasises the hard non-targets.
enum class MVVariant {
  adaptive,  ///< h(c) = t c + t - 1, h' = t
  fixed      ///< h(c) = c + t - 1, h' = 1
};

namespace detail {
template <>
struct enum_info<MVVariant> {
  static constexpr int count = 2;
  static constexpr const char* name = "MVVariant";
};
}  // namespace detail

/// The official code's increment t' to this library's t = t' + 1.
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

/// MV-Softmax (Wang et al., AAAI 2020; docs/formulas.md §5): the margined target of CosFace
/// (MV-AM) or ArcFace (MV-Arc), and hard non-targets (c_ij above the margined target)
/// emphasised by t >= 1 (MVVariant); t = 1 is the plain margin loss.
template <typename T>
struct MVSoftmax {
  using value_type = T;  ///< float or double
  using row_type = detail::MiningRow<T>;  ///< once-per-row terms: the target f(t_i), its slope and the hard threshold
  static constexpr bool plain_non_target = false;  ///< hard non-targets are transformed by non_target()
  static constexpr const char* name = "MVSoftmax";  ///< the policy's name in error messages

  T s = T(32);     ///< scale of the logits (paper and official code)
  T m = T(0.35);   ///< margin of the target: 0.35 for MV-AM; MV-Arc used 0.5 in the SV-Softmax paper
  T t = T(1.2);    ///< hard-vector weight, >= 1: official t' = 0.2; FaceX-Zoo uses 1.12
  MarginTarget target = MarginTarget::additive_cosine;  ///< AM (CosFace) or Arc (ArcFace) target
  MVVariant variant = MVVariant::adaptive;  ///< how hard non-targets are emphasised
  /// Arc target: as ArcFace. AM target: none (t - m) or easy_margin (t - m only where t > 0).
  Fallback fallback = Fallback::none;
  bool conditional_margin = false;  ///< AM target: t - m only where t > m (FaceX-Zoo MV-AM)
  Gradient gradient = Gradient::exact;  ///< of the Arc target

  /// Throws invalid_argument unless s > 0, m >= 0 (< pi for the Arc target), t >= 1, the
  /// fallback and conditional_margin fit the target, and the enumerations hold valid values.
  void validate() const {
    detail::check_mining_target(name, s, m, target, fallback, conditional_margin);
    detail::check_enums(name, fallback, gradient);
    detail::check_enum(name, "target", target);
    detail::check_enum(name, "variant", variant);
    detail::require_finite(name, "t", t);
    if (!(t >= T(1)))
      detail::fail(name, ": t = ", t, " must be >= 1 (t = 1 is the plain margin loss; the official code's t' = ", t,
                   " is t = ", t + T(1), " here, see mv_t_from_increment)");
  }
  /// The margins this policy accepts as `m` (ClassMargins checks each class's): [0, pi) for
  /// the additive angular target, finite and >= 0 for the additive cosine one.
  MARGINLOSS_HD bool margin_in_range(T v) const {
    return target == MarginTarget::additive_angular ? detail::angular_margin_ok(v) : detail::cosine_margin_ok(v);
  }

  /// f(t) = t - m (AM) or cos(theta + m) (Arc), and the hard threshold: t - m, or the raw
  /// cos(theta + m) whatever the fallback.
  MARGINLOSS_HD row_type row(T tc, Index /*label*/) const {
    return detail::mining_target(tc, m, target, fallback, conditional_margin, gradient);
  }
  /// Hard (c above the threshold): t c + t - 1 (adaptive) or c + t - 1 (fixed); otherwise c.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type& r) const { return detail::mv_non_target(c, r, t, variant); }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
