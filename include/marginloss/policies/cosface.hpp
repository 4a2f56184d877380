// CosFace / LMCL (Wang et al., CVPR 2018) and AM-Softmax (Wang, Cheng, Liu, Liu, SPL 2018):
// the additive cosine margin; the two papers define the same function (docs/formulas.md §2).
//   z_iy = s (t_i - m),  z_ij = s c_ij.
#pragma once

#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

template <typename T>
struct CosFace {
  using value_type = T;
  using row_type = detail::TargetRow<T>;
  static constexpr bool plain_non_target = true;
  static constexpr const char* name = "CosFace";

  T s = T(64);     // CosFace paper; AM-Softmax used s = 30
  T m = T(0.35);   // both papers; insightface arcface_torch configs use 0.4
  // The official AM-Softmax Caffe layer (LabelSpecificAdd) subtracts m only when t > m, a
  // switch the paper does not state. Off by default (the papers' formula); on reproduces it.
  bool conditional_margin = false;

  void validate() const {
    detail::require_positive(name, "s", s);
    detail::require_non_negative(name, "m", m);
  }

  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    const bool apply = !conditional_margin || t > m;
    return {{apply ? t - m : t, T(1)}};
  }
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

// AM-Softmax is CosFace; the alias only names the paper. Its published setting is s = 30, m = 0.35.
template <typename T>
using AMSoftmax = CosFace<T>;

MARGINLOSS_NAMESPACE_END
