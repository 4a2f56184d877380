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
// m = margins[y_i]. margins_from_class_counts() (margins.hpp) gives the LDAM choice
// m_j ∝ n_j^(-1/4).
//
// Both hold a ClassValues view (class_values.hpp) of margins the caller owns, so they are plain
// trivially copyable structs: the same policy runs on the CPU (host margins) and on the CUDA
// backend (device margins), and the subset engine (sampling/subset.hpp) re-points the view at
// the active classes' margins. This header is Eigen-free (it is compiled by nvcc).
#pragma once

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#include "../class_values.hpp"
#include "../errors.hpp"
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

// The view's own checks, on the host, without reading a value (it may be device memory).
template <typename T>
inline void check_class_values_view(const char* name, const ClassValues<T>& v) {
  if (v.size <= 0) fail(name, ": margins is empty: it needs one entry per class");
  if (!v.data) fail(name, ": margins points to no memory (null data with ", v.size, " entries)");
}
}  // namespace detail

/// AdaM-Softmax of AdaptiveFace (Liu et al., CVPR 2019; docs/formulas.md §6): CosFace with one
/// learnable margin per class, z_iy = s (t_i - m_{y_i}), z_ij = s c_ij, and the regulariser
/// R = -lambda_m mean_{j in J} m_j that pushes the margins up (L = CE + R). `margins` is a view
/// of the caller's C margins (host memory for the CPU engine, device memory for the CUDA one):
/// the optimiser updates them in place. The entry points return dL/dmargins; project the
/// margins after each optimiser step with project_margins().
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
  ClassValues<T> margins;    ///< view of the C margins (caller-owned); FaceX-Zoo initialises U(0.3, 0.4)
  T lambda_m = T(70);        ///< weight of the regulariser (FaceX-Zoo)
  RegulariserScope scope = RegulariserScope::all_classes;  ///< the classes R averages over

  /// Throws invalid_argument unless s > 0, lambda_m >= 0, margins views at least one value and
  /// scope is a RegulariserScope value. The margins themselves (finite) are checked by the
  /// engines with class_value_ok(), on the device for the CUDA backend.
  void validate() const {
    detail::require_positive(name, "s", s);
    detail::require_non_negative(name, "lambda_m", lambda_m);
    detail::check_class_values_view(name, margins);
    detail::check_enum(name, "scope", scope);
  }
  /// The per-class values, checked against the number of classes C.
  MARGINLOSS_HD ClassValues<T> class_values() const { return margins; }
  /// A margin is acceptable when finite.
  MARGINLOSS_HD bool class_value_ok(T m) const { return m - m == T(0); }
  /// Throws the message for margins[k] = m (not acceptable).
  [[noreturn]] void fail_class_value(Index k, T m) const {
    detail::fail(name, ": margins(", k, ") = ", m, " must be finite");
  }

  /// f(t) = t - m_label, slope 1, df/dm = -1.
  MARGINLOSS_HD row_type row(T t, Index label) const { return {{t - margins[label], T(1)}, T(-1)}; }
  /// h(c) = c, slope 1.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }

  /// The regulariser is R = regulariser_weight() * mean_{j in J} m_j, with J the batch's
  /// distinct classes when regulariser_over_batch(), else all classes; so dR/dm_k =
  /// regulariser_weight() / |J| for k in J. The engines compute both (host or device).
  MARGINLOSS_HD T regulariser_weight() const { return -lambda_m; }
  /// True: J is the batch's distinct classes; false: every class.
  MARGINLOSS_HD bool regulariser_over_batch() const { return scope == RegulariserScope::batch_classes; }
};

/// Fixed per-class margins on top of a policy with a margin member `m` (CosFace, ArcFace,
/// SV/MV-Softmax, CurricularFace, AMM-Softmax): the row of sample i uses m = margins[y_i], e.g.
/// the LDAM margins of margins_from_class_counts(). `margins` is a view of the caller's C
/// margins (host or device memory), each a valid `m` of the base policy.
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
  ClassValues<value_type> margins;  ///< view of the C margins (caller-owned)

  /// Validates the base policy and the view (not the values: see class_value_ok()).
  void validate() const {
    base.validate();
    detail::check_class_values_view(name, margins);
  }
  /// The per-class values, checked against the number of classes C.
  MARGINLOSS_HD ClassValues<value_type> class_values() const { return margins; }
  /// A margin is acceptable when the base policy accepts it as its `m` (ArcFace: [0, pi), ...).
  MARGINLOSS_HD bool class_value_ok(value_type m) const { return base.margin_in_range(m); }
  /// Throws the message for margins[k] = m, with the base policy's reason.
  [[noreturn]] void fail_class_value(Index k, value_type m) const {
    Base b = base;
    b.m = m;
    try {
      b.validate();
    } catch (const invalid_argument& e) {
      detail::fail(name, ": margins(", k, ") = ", m, " is not a valid margin (",
                   e.what() + std::char_traits<char>::length("marginloss: "), ")");
    }
    detail::fail(name, ": margins(", k, ") = ", m, " is not a valid margin");
  }

  /// The base policy's state hook, where it has one (ClassMargins<CurricularFace>: tau).
  template <typename B = Base>
  auto updates_in_forward() const -> decltype(std::declval<const B&>().updates_in_forward()) {
    return base.updates_in_forward();
  }
  /// Forwards the batch mean of the target cosines to the base policy's state hook.
  template <typename B = Base>
  auto update_with_target_mean(double mean) -> decltype(std::declval<B&>().update_with_target_mean(mean)) {
    base.update_with_target_mean(mean);
  }

  /// The base policy's row with m = margins[label].
  MARGINLOSS_HD row_type row(value_type t, Index label) const {
    Base b = base;
    b.m = margins[label];
    return b.row(t, label);
  }
  /// The base policy's h(c).
  MARGINLOSS_HD ValueSlope<value_type> non_target(value_type c, const row_type& r) const { return base.non_target(c, r); }
  /// The base policy's S_i.
  MARGINLOSS_HD value_type scale(value_type x_norm) const { return base.scale(x_norm); }
  /// The base policy's.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return base.scale_is_feature_norm(); }
};

/// ClassMargins<Base>{base, margins}, with Base deduced; `margins` is viewed, not copied.
template <typename Base>
ClassMargins<Base> class_margins(const Base& base, ClassValues<typename Base::value_type> margins) {
  return {base, margins};
}

MARGINLOSS_NAMESPACE_END
