// Per-class margins.
//
// AdaptiveMargin -- AdaM-Softmax of AdaptiveFace (Liu et al., CVPR 2019; docs/formulas.md §6):
// CosFace with one LEARNABLE margin per class and a regulariser that pushes the margins up,
//   z_iy = s (t_i - m_{y_i}),  z_ij = s c_ij,   L = CE + R,   R = -lambda_m mean_{j in J} m_j
// where J is every class (scope all_classes, the paper and FaceX-Zoo) or the classes present in
// the batch (scope batch_classes). dL/dm_k = s/B sum_{i: y_i = k} (1 - p_ik) + dR/dm_k, returned
// as Result::dmargins. The softmax term pushes margins down, the regulariser up; classes with
// little or hard data keep larger margins. After each optimiser step project the margins to
// [0, 1] with project_margins() (not differentiated).
//
// With scope all_classes, dR/dm_k = -lambda_m / C for every class, present or not: classes
// absent from a batch only see the regulariser, so with C >> B their margins rise until the
// projection holds them at its upper bound, and a class's margin moves only when it is
// sampled. With batch_classes, absent classes are not touched at all and present ones get
// -lambda_m / |batch classes|, a much stronger push. Either way the projection keeps every
// margin finite and inside [lo, hi]; the tests train with C >> B to show it.
//
// ClassMargins<Base> -- FIXED per-class margins for any policy with a margin member `m`
// (CosFace, ArcFace, SV/MV-Softmax, CurricularFace, AMM-Softmax): the row of sample i uses
// m = margins(y_i). margins_from_class_counts() gives the LDAM choice m_j ∝ n_j^(-1/4).
#pragma once

#include <cmath>
#include <string>
#include <type_traits>

#include "../errors.hpp"
#include "../types.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// The classes J the regulariser R = -lambda_m mean_{j in J} m_j of AdaptiveMargin averages over.
enum class RegulariserScope {
  all_classes,    ///< every class (the paper and FaceX-Zoo): dR/dm_k = -lambda_m / C for all k
  batch_classes   ///< the batch's distinct labels: absent classes get no gradient
};

namespace detail {
template <>
struct enum_info<RegulariserScope> {
  static constexpr int count = 2;
  static constexpr const char* name = "RegulariserScope";
};

template <typename T>
inline void check_margins(const char* name, const Vector<T>& margins) {
  if (margins.size() == 0) fail(name, ": margins is empty: it needs one entry per class");
  for (Index k = 0; k < margins.size(); ++k)
    if (!std::isfinite(margins(k))) fail(name, ": margins(", k, ") = ", margins(k), " must be finite");
}
}  // namespace detail

/// AdaM-Softmax of AdaptiveFace (Liu et al., CVPR 2019; docs/formulas.md §6): CosFace with one
/// learnable margin per class, z_iy = s (t_i - m_{y_i}), z_ij = s c_ij, and the regulariser
/// R = -lambda_m mean_{j in J} m_j that pushes the margins up (L = CE + R). The entry points
/// return dL/dmargins; project the margins after each optimiser step with project_margins().
template <typename T>
struct AdaptiveMargin {
  using value_type = T;  ///< float or double
  /// Once-per-row terms: the target and, for the margins' gradient, its derivative in m_{y_i}.
  struct row_type {
    ValueSlope<T> target;  ///< f(t_i) = t_i - m_{y_i}, slope 1
    T dtarget_dmargin;  ///< d f / d m_{y_i}
  };
  static constexpr bool plain_non_target = true;  ///< h(c) = c: the engines skip non_target()
  static constexpr bool learnable_margins = true;  ///< the entry points need a dmargins output
  static constexpr const char* name = "AdaptiveMargin";  ///< the policy's name in error messages

  T s = T(30);               ///< scale of the logits: FaceX-Zoo; its training config uses 32
  Vector<T> margins;         ///< one per class (C entries); FaceX-Zoo initialises U(0.3, 0.4)
  T lambda_m = T(70);        ///< weight of the regulariser (FaceX-Zoo)
  RegulariserScope scope = RegulariserScope::all_classes;  ///< the classes R averages over

  /// Throws invalid_argument unless s > 0, lambda_m >= 0, margins is non-empty and finite and
  /// scope is a RegulariserScope value.
  void validate() const {
    detail::require_positive(name, "s", s);
    detail::require_non_negative(name, "lambda_m", lambda_m);
    detail::check_margins(name, margins);
    detail::check_enum(name, "scope", scope);
  }
  /// margins.size(), checked against the number of classes C.
  Index class_count() const { return margins.size(); }

  /// f(t) = t - m_label, slope 1, df/dm = -1.
  row_type row(T t, Index label) const { return {{t - margins(label), T(1)}, T(-1)}; }
  /// h(c) = c, slope 1.
  ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  /// S_i = s, whatever the feature norm.
  T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  bool scale_is_feature_norm() const { return false; }

  /// R over the given classes (the batch's distinct labels), or over all classes.
  T regulariser(const Index* batch_classes, Index n) const {
    if (scope == RegulariserScope::all_classes) return -lambda_m * margins.mean();
    T sum = 0;
    for (Index k = 0; k < n; ++k) sum += margins(batch_classes[k]);
    return -lambda_m * sum / static_cast<T>(n);
  }
  /// dm += weight * dR/dm (dm has C entries; batch_classes as in regulariser()).
  void add_regulariser_gradient(T weight, const Index* batch_classes, Index n, T* dm) const {
    if (scope == RegulariserScope::all_classes) {
      const T g = -weight * lambda_m / static_cast<T>(margins.size());
      for (Index k = 0; k < margins.size(); ++k) dm[k] += g;
    } else {
      const T g = -weight * lambda_m / static_cast<T>(n);
      for (Index k = 0; k < n; ++k) dm[batch_classes[k]] += g;
    }
  }
};

/// Fixed per-class margins on top of a policy with a margin member `m` (CosFace, ArcFace,
/// SV/MV-Softmax, CurricularFace, AMM-Softmax): the row of sample i uses m = margins(y_i), e.g.
/// the LDAM margins of margins_from_class_counts().
template <typename Base>
struct ClassMargins {
  static_assert(std::is_floating_point_v<decltype(Base::m)>,
                "marginloss: class_margins needs a policy with a real-valued margin member m (SphereFace's "
                "integer m cannot take per-class margins)");
  using value_type = typename Base::value_type;  ///< the base policy's
  using row_type = typename Base::row_type;  ///< the base policy's
  static constexpr bool plain_non_target = Base::plain_non_target;  ///< the base policy's
  static constexpr const char* name = Base::name;  ///< the base policy's name in error messages

  Base base;  ///< the policy whose `m` is replaced per class; its other parameters apply to all
  Vector<value_type> margins;  ///< one per class, >= 0

  /// Validates the base policy and, for every class, the base policy with m = margins(k).
  void validate() const {
    base.validate();
    detail::check_margins(name, margins);
    // Every class's margin obeys the wrapped policy's own rule (ArcFace: m < pi, ...): the
    // policy a sample of class k uses is validated, not only the base's default margin.
    Base b = base;
    for (Index k = 0; k < margins.size(); ++k) {
      if (margins(k) < 0) detail::fail(name, ": margins(", k, ") = ", margins(k), " must be >= 0");
      b.m = margins(k);
      try {
        b.validate();
      } catch (const invalid_argument& e) {
        detail::fail(name, ": margins(", k, ") = ", margins(k), " is not a valid margin (",
                     e.what() + std::char_traits<char>::length("marginloss: "), ")");
      }
    }
  }
  /// margins.size(), checked against the number of classes C.
  Index class_count() const { return margins.size(); }

  /// The base policy's row with m = margins(label).
  row_type row(value_type t, Index label) const {
    Base b = base;
    b.m = margins(label);
    return b.row(t, label);
  }
  /// The base policy's h(c).
  ValueSlope<value_type> non_target(value_type c, const row_type& r) const { return base.non_target(c, r); }
  /// The base policy's S_i.
  value_type scale(value_type x_norm) const { return base.scale(x_norm); }
  /// The base policy's.
  bool scale_is_feature_norm() const { return base.scale_is_feature_norm(); }
};

/// ClassMargins<Base>{base, margins}, with Base deduced.
template <typename Base>
ClassMargins<Base> class_margins(const Base& base, Vector<typename Base::value_type> margins) {
  return {base, std::move(margins)};
}

/// LDAM margins (Cao et al., NeurIPS 2019): m_j = max_margin (n_min / n_j)^(1/4), the largest
/// for the rarest class. Every count must be >= 1.
template <typename T, typename Derived>
Vector<T> margins_from_class_counts(const Eigen::MatrixBase<Derived>& counts, T max_margin) {
  detail::require_non_negative("margins_from_class_counts", "max_margin", max_margin);
  if (counts.size() == 0) detail::fail("margins_from_class_counts: counts is empty");
  double n_min = 0;
  for (Index k = 0; k < counts.size(); ++k) {
    const double n = static_cast<double>(counts.derived().coeff(k));
    if (!(n >= 1)) detail::fail("margins_from_class_counts: counts(", k, ") = ", n, " must be >= 1");
    n_min = k == 0 ? n : std::min(n_min, n);
  }
  Vector<T> m(counts.size());
  for (Index k = 0; k < counts.size(); ++k)
    m(k) = static_cast<T>(static_cast<double>(max_margin) * std::pow(n_min / static_cast<double>(counts.derived().coeff(k)), 0.25));
  return m;
}

/// The projection after an optimiser step: margins clamped to [lo, hi] (AdaptiveFace: [0, 1]).
template <typename T>
void project_margins(Vector<T>& margins, T lo = T(0), T hi = T(1)) {
  if (!(lo <= hi)) detail::fail("project_margins: lo = ", lo, " must be <= hi = ", hi);
  margins = margins.cwiseMax(lo).cwiseMin(hi);
}

MARGINLOSS_NAMESPACE_END
