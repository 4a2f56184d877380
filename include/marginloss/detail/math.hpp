// marginloss: scalar helpers shared by the policies (host and device).
#pragma once

#include <cmath>

#include "../config.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

template <typename T>
MARGINLOSS_HD inline T clamp_cosine(T c) {
  // Rounding in the product can leave |c| a few ulps above 1; arccos and sqrt(1 - c^2) must
  // never see such a value (docs/formulas.md §9).
  return c > T(1) ? T(1) : (c < T(-1) ? T(-1) : c);
}

// sin(theta) for theta = arccos(c), c in [-1, 1].
template <typename T>
MARGINLOSS_HD inline T sine_of_angle(T c) {
  const T s2 = T(1) - c * c;
  return s2 > T(0) ? std::sqrt(s2) : T(0);
}

// Floor for sin(theta) in derivatives of the form g(theta)/sin(theta). The slope of a
// transform cos(g(theta)) is unbounded as |c| -> 1, but its contribution to dX and dW is
// multiplied by |dc/dx| = sin(theta)/|x| (docs/formulas.md §3; the ArcFace slope cancels against it), so flooring only rescales the
// gradient of samples with theta below the floor and never yields inf or inf*0 = NaN.
template <typename T>
MARGINLOSS_HD constexpr T sine_floor();
template <>
MARGINLOSS_HD constexpr float sine_floor<float>() { return 1e-6f; }
template <>
MARGINLOSS_HD constexpr double sine_floor<double>() { return 1e-12; }

template <typename T>
MARGINLOSS_HD inline T guarded_sine(T sine) {
  return sine > sine_floor<T>() ? sine : sine_floor<T>();
}

constexpr double pi = 3.14159265358979323846;

// The margins each kind of policy accepts, as predicates the per-class checks evaluate (on the
// device too): an additive cosine margin is finite and >= 0, an angular one lies in [0, pi).
// The policies' validate() states the same rules with their messages (tests check agreement).
template <typename T>
MARGINLOSS_HD inline bool cosine_margin_ok(T m) {
  return m >= T(0) && m - m == T(0);
}
template <typename T>
MARGINLOSS_HD inline bool angular_margin_ok(T m) {
  return m >= T(0) && m < T(pi);
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
