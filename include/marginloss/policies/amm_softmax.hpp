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

template <typename T>
struct AMMSoftmax {
  using value_type = T;
  using row_type = detail::MiningRow<T>;
  static constexpr bool plain_non_target = false;
  static constexpr const char* name = "AMMSoftmax";

  T s = T(64);
  T m = T(0.5);
  T m_h = T(0.1);
  Fallback fallback = Fallback::hard_threshold;
  Gradient gradient = Gradient::exact;

  void validate() const {
    detail::require_positive(name, "s", s);
    detail::check_enums(name, fallback, gradient);
    detail::require_non_negative(name, "m", m);
    detail::require_non_negative(name, "m_h", m_h);
    if (!(m < T(detail::pi))) detail::fail(name, ": m = ", m, " must be < pi");
    if (!(m_h < T(detail::pi))) detail::fail(name, ": m_h = ", m_h, " must be < pi");
  }

  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    return detail::mining_target(t, m, MarginTarget::additive_angular, fallback, false, gradient);
  }
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type& r) const {
    if (!(c > r.threshold)) return {c, T(1)};
    return detail::amm_hard_vector(c, m_h);
  }
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
