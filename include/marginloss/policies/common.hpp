// marginloss: vocabulary shared by the policies, and the policy contract.
//
// A policy is a plain struct describing one row of logits (docs/formulas.md §1, §8):
//   z_iy = S_i * f(t_i)          target logit, t_i = cos(theta_{i,y_i})
//   z_ij = S_i * h(c_ij; row)    non-target logits
// It knows nothing about memory, threads or devices. The contract, checked by
// is_margin_policy<P> below:
//   using value_type = float | double;
//   using row_type   = ...;                       // once-per-row terms; has `ValueSlope target`
//   static constexpr bool plain_non_target;       // h(c) = c: engines skip the per-logit call
//   static constexpr const char* name;
//   void validate() const;                        // throws marginloss::invalid_argument
//   row_type row(T t, Index label) const;         // margined target and mining thresholds
//   ValueSlope<T> non_target(T c, const row_type&) const;
//   T scale(T x_norm) const;                      // S_i: fixed s, or the feature norm
//   bool scale_is_feature_norm() const;           // S_i = |x_i| (then dS/dx enters dX)
// row(), non_target() and scale() are MARGINLOSS_HD so the CUDA backend runs the same code.
// Optional members, each detected by a trait below and called by the engines when present:
//   ClassValues<T> class_values() const;          // per-class data (class_values.hpp): a view of
//                                                 // caller-owned memory, its size checked == C
//   bool class_value_ok(T v) const;               // each value is checked by the engines (on
//   void fail_class_value(Index k, T v) const;    // the device for CUDA); the second throws
//                                                 // (has_class_values)
//   static constexpr bool learnable_margins;      // true: the row type also carries
//                                                 // T dtarget_dmargin = d f / d m_{y_i}, the
//                                                 // entry points take a dmargins output, and
//                                                 // the policy has the two members below
//                                                 // (has_learnable_margins)
//   T regulariser_weight() const;                 // R = weight * mean_{j in J} m_j, added to the
//   bool regulariser_over_batch() const;          // loss; J = the batch's classes or all classes
//   bool updates_in_forward() const;              // state updated by each forward from the
//   void update_with_target_mean(double mean_t);  // batch mean of the target cosines (CurricularFace's
//                                                 // tau): called by the engines on the caller's
//                                                 // policy, which must then be a modifiable lvalue
//                                                 // (has_state_hook)
// class_values(), class_value_ok() and the regulariser members are MARGINLOSS_HD too.
// Policies that wrap another (ClassMargins<Base>) forward these as they apply.
#pragma once

#include <type_traits>

#include "../config.hpp"
#include "../errors.hpp"
#include "../value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN

namespace detail {
// The enumerator count and the type's name of every public enumeration, specialised next to the
// enumeration (update it with it): the one range check_enum and the fuzzer's out-of-range values
// read.
template <typename E>
struct enum_info;

// Enumerations arrive from configuration files and bindings too: reject values outside them.
template <typename E>
inline void check_enum(const char* owner, const char* member, E value) {
  const int v = static_cast<int>(value);
  if (v < 0 || v >= enum_info<E>::count) fail(owner, ": ", member, " = ", v, " is not a ", enum_info<E>::name, " value");
}
}  // namespace detail

/// How the backward pass differentiates a margined target.
enum class Gradient {
  exact,             ///< the true derivative of the forward (default)
  straight_through,  ///< value margined, derivative taken as 1: current insightface arcface_torch
                     ///< (margin applied under no_grad) and opensphere's "detached" margins
};

/// What the additive angular margin does where theta + m passes pi and cos(theta + m) stops
/// decreasing (docs/formulas.md §3).
enum class Fallback {
  hard_threshold,  ///< t > cos(pi - m): cos(theta + m), else t - m sin m  (older insightface, CurricularFace)
  easy_margin,     ///< t > 0: cos(theta + m), else t
  none,            ///< always cos(theta + m) (current arcface_torch, the original MXNet code)
};

/// The margined target of the mining policies (SV-, MV-Softmax): additive cosine (AM, t - m)
/// or additive angular (Arc, cos(theta + m)).
enum class MarginTarget {
  additive_cosine,   ///< AM: f(t) = t - m; hard non-targets are c > t - m
  additive_angular,  ///< Arc: f(t) = cos(theta + m); hard non-targets are c > cos(theta + m)
};

namespace detail {
template <>
struct enum_info<Gradient> {
  static constexpr int count = 2;
  static constexpr const char* name = "Gradient";
};
template <>
struct enum_info<Fallback> {
  static constexpr int count = 3;
  static constexpr const char* name = "Fallback";
};
template <>
struct enum_info<MarginTarget> {
  static constexpr int count = 2;
  static constexpr const char* name = "MarginTarget";
};
}  // namespace detail

/// The enumerator's name as written in the source ("exact", "straight_through"), for messages.
inline const char* to_string(Gradient g) {
  return g == Gradient::exact ? "exact" : "straight_through";
}
/// The enumerator's name as written in the source ("hard_threshold", ...), for messages.
inline const char* to_string(Fallback f) {
  return f == Fallback::hard_threshold ? "hard_threshold" : (f == Fallback::easy_margin ? "easy_margin" : "none");
}

namespace detail {

// The two enumerations of every angular-margin policy.
inline void check_enums(const char* policy, Fallback f, Gradient g) {
  check_enum(policy, "fallback", f);
  check_enum(policy, "gradient", g);
}

// Row terms of a policy whose non-target logits are the plain cosines.
template <typename T>
struct TargetRow {
  ValueSlope<T> target;
};

template <typename P, typename = void>
struct has_policy_members : std::false_type {};

template <typename P>
struct has_policy_members<
    P, std::void_t<typename P::value_type, typename P::row_type, decltype(P::plain_non_target), decltype(P::name),
                   decltype(std::declval<const P&>().validate()),
                   decltype(std::declval<const P&>().row(typename P::value_type(), Index())),
                   decltype(std::declval<const P&>().non_target(typename P::value_type(),
                                                                std::declval<const typename P::row_type&>())),
                   decltype(std::declval<const P&>().scale(typename P::value_type())),
                   decltype(std::declval<const P&>().scale_is_feature_norm()),
                   decltype(std::declval<const typename P::row_type&>().target)>>
    : std::bool_constant<std::is_same_v<typename P::value_type, float> ||
                         std::is_same_v<typename P::value_type, double>> {};

// Policies with per-class data (margins): a view of it, checked against C and value by value.
template <typename P, typename = void>
struct has_class_values : std::false_type {};
template <typename P>
struct has_class_values<P, std::void_t<decltype(std::declval<const P&>().class_values()),
                                       decltype(std::declval<const P&>().class_value_ok(typename P::value_type())),
                                       decltype(std::declval<const P&>().fail_class_value(Index(), typename P::value_type()))>>
    : std::true_type {};

// The scalar type of a policy given as a (possibly reference or const) type.
template <typename PP>
using policy_value_t = typename std::decay_t<PP>::value_type;

// Policies with state updated by each forward from the batch's target cosines (CurricularFace).
template <typename P, typename = void>
struct has_state_hook : std::false_type {};
template <typename P>
struct has_state_hook<P, std::void_t<decltype(std::declval<const P&>().updates_in_forward()),
                                     decltype(std::declval<P&>().update_with_target_mean(0.0))>> : std::true_type {};

// The forward entry points take the policy by forwarding reference: the engine may update a
// stateful policy (has_state_hook) only when it is a modifiable lvalue. PolicyRef is the
// deduced type; the check runs where the other argument checks run.
template <typename PolicyRef>
inline constexpr bool modifiable_policy_v =
    std::is_lvalue_reference_v<PolicyRef> && !std::is_const_v<std::remove_reference_t<PolicyRef>>;

template <typename PolicyRef, typename P>
inline void check_state_hook(const P& policy) {
  if constexpr (has_state_hook<P>::value)
    if (policy.updates_in_forward() && !modifiable_policy_v<PolicyRef>)
      fail(P::name, ": update_tau_in_forward = true: the forward updates tau in the policy you pass, so pass it as a "
                    "modifiable (non-const, named) object; or set update_tau_in_forward = false and update tau yourself "
                    "(update_tau(ml::target_cosines(X, W, labels)) before the forward, as data-parallel training does "
                    "with the all-reduced mean)");
}

// Policies with learnable per-class margins: row terms carry d f / d m_{y_i}, and the policy
// has a regulariser over the margins (see policies/adaptive_margin.hpp).
template <typename P, typename = void>
struct has_learnable_margins : std::false_type {};
template <typename P>
struct has_learnable_margins<P, std::void_t<decltype(P::learnable_margins)>> : std::bool_constant<P::learnable_margins> {};

}  // namespace detail

/// True when P satisfies the policy contract (stated at the top of policies/common.hpp:
/// value_type, row_type, plain_non_target, name, validate(), row(), non_target(), scale(),
/// scale_is_feature_norm()) with a float or double value_type. The entry points check it with
/// a static_assert.
template <typename P>
struct is_margin_policy : detail::has_policy_members<P> {};

/// `is_margin_policy<P>::value`.
template <typename P>
inline constexpr bool is_margin_policy_v = is_margin_policy<P>::value;

MARGINLOSS_NAMESPACE_END
