// marginloss: the margined target and the hard-vector threshold shared by the mining policies
// (docs/formulas.md §5). A non-target is hard when its cosine beats the margined target:
//   additive cosine (AM) target:   hard iff c_ij > t_i - m
//   additive angular (Arc) target: hard iff c_ij > cos(theta_i + m), the raw value, never the
//                                  fallback value (official CurricularFace and MV-Arc code).
// The mask is a constant for differentiation, as in every reference implementation.
#pragma once

#include "../policies/common.hpp"
#include "angular_margin.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

template <typename T>
struct MiningRow {
  ValueSlope<T> target;
  T threshold;  // non-targets with c > threshold are hard
};

// AM target: t - m; Fallback::easy_margin applies the margin only where t > 0 (the official
// MV-Softmax code), `conditional` only where t > m (FaceX-Zoo's MV-AM). Arc target: ArcFace
// with the given fallback.
template <typename T>
MARGINLOSS_HD inline MiningRow<T> mining_target(T t, T m, MarginTarget target, Fallback fallback, bool conditional,
                                                Gradient gradient) {
  if (target == MarginTarget::additive_angular) {
    const AngularTarget<T> a = angular_margin(t, T(1), m, T(0), fallback, gradient);
    return {a.target, a.raw};
  }
  bool apply = true;
  if (conditional) apply = t > m;
  else if (fallback == Fallback::easy_margin) apply = t > T(0);
  return {{apply ? t - m : t, T(1)}, t - m};
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
