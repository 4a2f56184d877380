// marginloss: the combined angular margin f(t) = cos(m1 theta + m2) - m3 and its slope, the
// single implementation behind ArcFace, the combined margin and the mining policies' targets.
#pragma once

#include <cmath>

#include "../policies/common.hpp"
#include "math.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// Once-per-row evaluation for t = cos(theta) (docs/formulas.md §3):
//   main branch  f(t) = cos(m1 theta + m2) - m3,  f'(t) = m1 sin(m1 theta + m2) / sin(theta)
//   hard threshold: where m1 theta + m2 > pi, f(t) = t - m2 sin(m2) - m3 (slope 1); for
//     (m1, m2, m3) = (1, m, 0) this is the familiar t - m sin m for t <= cos(pi - m).
//   easy margin: where t <= 0, f(t) = t - m3 (slope 1).
// `raw` is the main-branch value whatever the fallback: mining policies compare non-target
// cosines with the raw cos(theta + m), not with the fallback value (official CurricularFace).
template <typename T>
struct AngularTarget {
  ValueSlope<T> target;
  T raw;
};

template <typename T>
MARGINLOSS_HD inline AngularTarget<T> angular_margin(T t, T m1, T m2, T m3, Fallback fallback, Gradient gradient) {
  const T sine = sine_of_angle(t);
  T value, slope;
  if (m1 == T(1)) {
    // cos(theta + m2) = t cos m2 - sin(theta) sin m2: no arccos on the common path.
    const T cm = std::cos(m2), sm = std::sin(m2);
    value = t * cm - sine * sm;
    slope = cm + t * sm / guarded_sine(sine);  // = sin(theta + m2) / sin(theta)
  } else {
    const T angle = m1 * std::acos(t) + m2;
    value = std::cos(angle);
    slope = m1 * std::sin(angle) / guarded_sine(sine);
  }
  value -= m3;
  const T raw = value;

  bool use_main = true;
  T fallback_value = t - m3;
  if (fallback == Fallback::hard_threshold) {
    // m1 theta + m2 > pi  <=>  t < cos((pi - m2) / m1), when that angle lies inside [0, pi).
    const T limit = (T(pi) - m2) / m1;
    use_main = !(limit < T(pi) && t <= std::cos(limit));
    fallback_value = t - m2 * std::sin(m2) - m3;
  } else if (fallback == Fallback::easy_margin) {
    use_main = t > T(0);
  }
  if (!use_main) {
    value = fallback_value;
    slope = T(1);
  }
  if (gradient == Gradient::straight_through) slope = T(1);
  return {{value, slope}, raw};
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
