// NormFace (Wang et al., ACM MM 2017): normalised softmax without a margin.
//   z_iy = s t_i,  z_ij = s c_ij.
#pragma once

#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// NormFace (Wang et al., ACM MM 2017): normalised softmax without a margin,
/// z_iy = s t_i, z_ij = s c_ij (docs/formulas.md §1).
template <typename T>
struct NormFace {
  using value_type = T;  ///< float or double
  using row_type = detail::TargetRow<T>;  ///< once-per-row terms: the target f(t_i) and its slope
  static constexpr bool plain_non_target = true;  ///< h(c) = c: the engines skip non_target()
  static constexpr const char* name = "NormFace";  ///< the policy's name in error messages

  /// Scale of the logits. No universal default exists: with s = 64 the plain normalised
  /// softmax fails to train and s = 20 works (ArcFace journal, Table 2); 20 is the default.
  T s = T(20);

  /// Throws invalid_argument unless s is finite and > 0.
  void validate() const { detail::require_positive(name, "s", s); }

  /// f(t) = t, slope 1: no margin.
  MARGINLOSS_HD row_type row(T t, Index /*label*/) const { return {{t, T(1)}}; }
  /// h(c) = c, slope 1.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
