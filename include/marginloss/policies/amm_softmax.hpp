// AMM-Softmax (Lee, Wang, Cho, "Angular Margin-Mining Softmax Loss for Face Recognition",
// IEEE Access 10:43071, 2022; docs/formulas.md §5).
//
// RECONSTRUCTION. The paper's exact formula could not be obtained; its abstract describes an
// angular (geodesic) margin on the target and a "linear angular margin" applied to hard
// samples in the same angular shape. This policy implements that reading:
//   target  f(t) = cos(theta + m)       (ArcFace, hard-threshold fallback by default)
//   hard    c_ij > cos(theta_i + m)     (the raw value)
//   hard non-targets h(c) = cos(max(theta_ij - m_h, 0)), their angle shrunk by m_h
//   h'(c) = sin(theta - m_h) / sin(theta) for theta > m_h, else 0
// The hard-vector transform is the single function detail::amm_hard_vector below: replace it
// when the published form is known. No published results are quoted for this policy.
#pragma once

#include <cmath>

#include "../detail/angular_margin.hpp"
#include "../detail/mining_target.hpp"
#include "../detail/math.hpp"
#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

namespace detail {

// The hard-vector transform of AMM-Softmax (reconstructed): cos(max(theta - m_h, 0)).
template <typename T>
MARGINLOSS_HD inline ValueSlope<T> amm_hard_vector(T c, T m_h) {
  const T sine = sine_of_angle(c);
  // theta > m_h  <=>  c < cos(m_h)
  if (!(c < std::cos(m_h))) return {T(1), T(0)};
  const T cm = std::cos(m_h), sm = std::sin(m_h);
  return {c * cm + sine * sm, cm - c * sm / guarded_sine(sine)};
}

}  // namespace detail

/// AMM-Softmax (Lee, Wang, Cho, IEEE Access 2022; docs/formulas.md §5), RECONSTRUCTED from
/// the abstract: ArcFace target f(t) = cos(theta + m); hard non-targets (c_ij > cos(theta_i + m))
/// get their angle shrunk by m_h, h(c) = cos(max(theta_ij - m_h, 0)). No published results are
/// quoted for it.
template <typename T>
struct AMMSoftmax {
  using value_type = T;  ///< float or double
  using row_type = detail::MiningRow<T>;  ///< once-per-row terms: the target f(t_i), its slope and the hard threshold
  static constexpr bool plain_non_target = false;  ///< hard non-targets are transformed by non_target()
  static constexpr const char* name = "AMMSoftmax";  ///< the policy's name in error messages

  T s = T(64);     ///< scale of the logits
  T m = T(0.5);    ///< angular margin of the target, in [0, pi)
  T m_h = T(0.1);  ///< angular margin taken off the hard non-targets, in [0, pi)
  Fallback fallback = Fallback::hard_threshold;  ///< of the ArcFace target
  Gradient gradient = Gradient::exact;  ///< of the ArcFace target

  /// Throws invalid_argument unless s > 0, m and m_h are in [0, pi) and the enumerations hold
  /// valid values.
  void validate() const {
    detail::require_positive(name, "s", s);
    detail::check_enums(name, fallback, gradient);
    detail::require_non_negative(name, "m", m);
    detail::require_non_negative(name, "m_h", m_h);
    if (!(m < T(detail::pi))) detail::fail(name, ": m = ", m, " must be < pi");
    if (!(m_h < T(detail::pi))) detail::fail(name, ": m_h = ", m_h, " must be < pi");
  }
  /// The margins this policy accepts as `m` (ClassMargins checks each class's): [0, pi).
  MARGINLOSS_HD bool margin_in_range(T v) const { return detail::angular_margin_ok(v); }

  /// f(t) = cos(theta + m) as ArcFace; the hard threshold is the raw cos(theta + m).
  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    return detail::mining_target(t, m, MarginTarget::additive_angular, fallback, false, gradient);
  }
  /// Hard (c above the threshold): h(c) = cos(max(theta - m_h, 0)),
  /// h'(c) = sin(theta - m_h) / sin(theta) for theta > m_h, else 0; otherwise h(c) = c.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type& r) const {
    if (!(c > r.threshold)) return {c, T(1)};
    return detail::amm_hard_vector(c, m_h);
  }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
