// NormFace (Wang et al., ACM MM 2017): normalised softmax without a margin.
//   z_iy = s t_i,  z_ij = s c_ij.
#pragma once

#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

template <typename T>
struct NormFace {
  using value_type = T;
  using row_type = detail::TargetRow<T>;
  static constexpr bool plain_non_target = true;
  static constexpr const char* name = "NormFace";

  // No universal default exists: with s = 64 the plain normalised softmax fails to train and
  // s = 20 works (ArcFace journal, Table 2); 20 is the default.
  T s = T(20);

  void validate() const { detail::require_positive(name, "s", s); }

  MARGINLOSS_HD row_type row(T t, Index /*label*/) const { return {{t, T(1)}}; }
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
