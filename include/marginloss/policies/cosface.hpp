// CosFace / LMCL (Wang et al., CVPR 2018) and AM-Softmax (Wang, Cheng, Liu, Liu, SPL 2018):
// the additive cosine margin; the two papers define the same function (docs/formulas.md §2).
//   z_iy = s (t_i - m),  z_ij = s c_ij.
#pragma once

#include "../detail/math.hpp"
#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// CosFace / LMCL and AM-Softmax: the additive cosine margin, z_iy = s (t_i - m),
/// z_ij = s c_ij (docs/formulas.md §2).
template <typename T>
struct CosFace {
  using value_type = T;  ///< float or double
  using row_type = detail::TargetRow<T>;  ///< once-per-row terms: the target f(t_i) and its slope
  static constexpr bool plain_non_target = true;  ///< h(c) = c: the engines skip non_target()
  static constexpr const char* name = "CosFace";  ///< the policy's name in error messages

  T s = T(64);     ///< scale of the logits: 64 in the CosFace paper; AM-Softmax used s = 30
  T m = T(0.35);   ///< cosine margin, >= 0: both papers; insightface arcface_torch configs use 0.4
  /// The official AM-Softmax Caffe layer (LabelSpecificAdd) subtracts m only when t > m, a
  /// switch the paper does not state. Off by default (the papers' formula); on reproduces it.
  bool conditional_margin = false;

  /// Throws invalid_argument unless s > 0 and m >= 0 (both finite).
  void validate() const {
    detail::require_positive(name, "s", s);
    detail::require_non_negative(name, "m", m);
  }
  /// The margins this policy accepts as `m` (ClassMargins checks each class's): finite, >= 0.
  MARGINLOSS_HD bool margin_in_range(T v) const { return detail::cosine_margin_ok(v); }

  /// f(t) = t - m (with conditional_margin: only where t > m, else t), slope 1.
  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    const bool apply = !conditional_margin || t > m;
    return {{apply ? t - m : t, T(1)}};
  }
  /// h(c) = c, slope 1.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

/// AM-Softmax is CosFace; the alias only names the paper. Its published setting is s = 30, m = 0.35.
template <typename T>
using AMSoftmax = CosFace<T>;

MARGINLOSS_NAMESPACE_END
