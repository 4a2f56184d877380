// CurricularFace (Huang et al., CVPR 2020; official HuangYG123/CurricularFace;
// docs/formulas.md §5): ArcFace target (hard-threshold fallback); hard non-targets
// (c_ij > cos(theta_i + m), the raw value) get h(c) = c (tau + c), h' = tau + 2c, where tau
// is a running mean of the target cosines, not differentiated.
//
// tau is state in the policy, owned by the caller. The official code updates it at every
// forward, BEFORE using it, from the batch's raw target cosines: tau <- 0.01 mean_i(t_i) +
// 0.99 tau, tau_0 = 0. The engines do exactly that (update_tau_in_forward = true, the default):
// once the target cosines are known (all-reduced over the ranks of a sharded call), they call
// update_with_target_mean() on the caller's policy, which must therefore be passed as a
// modifiable lvalue (a const or temporary policy is rejected with a message). Callers who own
// tau themselves (data-parallel training, where the batch mean is all-reduced over the data
// ranks first) set update_tau_in_forward = false and call update_tau_with_mean() /
// update_tau(ml::target_cosines(X, W, labels)) before the forward.
// (The paper's Eq. 9 puts 0.99 on the new statistic; its author confirmed the code is right.)
#pragma once

#include "../detail/mining_target.hpp"
#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// CurricularFace (Huang et al., CVPR 2020; docs/formulas.md §5): ArcFace target; hard
/// non-targets (c_ij > cos(theta_i + m)) get h(c) = c (tau + c), where tau, a running mean of
/// the target cosines, weights the hard examples more as training progresses.
template <typename T>
struct CurricularFace {
  using value_type = T;  ///< float or double
  using row_type = detail::MiningRow<T>;  ///< once-per-row terms: the target f(t_i), its slope and the hard threshold
  static constexpr bool plain_non_target = false;  ///< hard non-targets are transformed by non_target()
  static constexpr const char* name = "CurricularFace";  ///< the policy's name in error messages

  T s = T(64);           ///< scale of the logits (paper and official code)
  T m = T(0.5);          ///< angular margin of the target, in [0, pi) (paper and official code)
  T tau = T(0);          ///< running statistic t of the paper; save it with the checkpoint
  T momentum = T(0.99);  ///< weight of the old tau in update_tau
  Fallback fallback = Fallback::hard_threshold;  ///< of the ArcFace target (the official code's)
  Gradient gradient = Gradient::exact;  ///< of the ArcFace target
  /// true: each forward updates tau from the batch's target cosines before using it (the
  /// official code); the policy must be passed as a modifiable lvalue. false: tau is used as is.
  bool update_tau_in_forward = true;

  /// Throws invalid_argument unless s > 0, 0 <= m < pi, tau is finite, momentum is in [0, 1]
  /// and the enumerations hold valid values.
  void validate() const {
    detail::require_positive(name, "s", s);
    detail::check_enums(name, fallback, gradient);
    detail::require_non_negative(name, "m", m);
    if (!(m < T(detail::pi))) detail::fail(name, ": m = ", m, " must be < pi");
    detail::require_finite(name, "tau", tau);
    if (!(momentum >= T(0) && momentum <= T(1))) detail::fail(name, ": momentum = ", momentum, " must be in [0, 1]");
  }
  /// The margins this policy accepts as `m` (ClassMargins checks each class's): [0, pi).
  MARGINLOSS_HD bool margin_in_range(T v) const { return detail::angular_margin_ok(v); }

  /// tau <- (1 - momentum) mean + momentum tau. In data-parallel training pass the mean
  /// all-reduced over the ranks.
  void update_tau_with_mean(T mean_target_cosine) {
    detail::require_finite(name, "mean_target_cosine", mean_target_cosine);
    tau = (T(1) - momentum) * mean_target_cosine + momentum * tau;
  }
  /// The state hook the engines call once the target cosines t_i are known (mean over the
  /// batch, in double, in row order), when updates_in_forward() is true.
  void update_with_target_mean(double mean_target_cosine) { update_tau_with_mean(static_cast<T>(mean_target_cosine)); }
  /// Whether the engines update tau in each forward (update_tau_in_forward).
  bool updates_in_forward() const { return update_tau_in_forward; }

  /// The same from a vector of target cosines (e.g. ml::target_cosines(X, W, labels)): call
  /// it before each forward, as the official code updates tau before using it.
  template <typename Vec>
  void update_tau(const Vec& target_cosines) {
    if (target_cosines.size() == 0) detail::fail(name, ": update_tau needs at least one target cosine");
    double sum = 0;
    for (Index i = 0; i < static_cast<Index>(target_cosines.size()); ++i) sum += static_cast<double>(target_cosines[i]);
    update_tau_with_mean(static_cast<T>(sum / static_cast<double>(target_cosines.size())));
  }

  /// f(t) = cos(theta + m) as ArcFace; the hard threshold is the raw cos(theta + m), never
  /// the fallback value (official code).
  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    return detail::mining_target(t, m, MarginTarget::additive_angular, fallback, false, gradient);
  }
  /// Hard (c > cos(theta_i + m)): h(c) = c (tau + c), h' = tau + 2c (tau not differentiated);
  /// otherwise h(c) = c.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type& r) const {
    if (!(c > r.threshold)) return {c, T(1)};
    return {c * (tau + c), tau + T(2) * c};
  }
  /// S_i = s, whatever the feature norm.
  MARGINLOSS_HD T scale(T /*x_norm*/) const { return s; }
  /// false: the scale is the fixed s, so dS/dx does not enter dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return false; }
};

MARGINLOSS_NAMESPACE_END
