// marginloss: the scalar pieces of the per-row pass -- one logit, its slope, the online
// logsumexp merge -- free of Eigen and marked MARGINLOSS_HD, so that device code (the CUDA
// backend) computes them with the same expressions as the CPU pass (row_pass.hpp, engine.hpp).
// docs/formulas.md §1:
//   z_ij = S_i phi_ij,   phi_iy = f(t_i) (the target),   phi_ij = h(c_ij; row_i) otherwise
//   dL/dc_ij = coef (p_ij - delta_{j,y_i}) S_i phi'_ij
#pragma once

#include <cmath>

#include "../config.hpp"
#include "../value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// z_ij = S phi_ij. The target column takes S f(t) from the row terms, never from c_ij.
template <typename P, typename T = typename P::value_type>
MARGINLOSS_HD inline T logit(const P& policy, const typename P::row_type& terms, T S, T c, bool is_target) {
  if (is_target) return S * terms.target.value;
  if constexpr (P::plain_non_target) {
    (void)policy;
    return S * c;
  } else {
    return S * policy.non_target(c, terms).value;
  }
}

// z_ij and phi'_ij together (the backward pass needs both).
template <typename P, typename T = typename P::value_type>
MARGINLOSS_HD inline ValueSlope<T> logit_and_slope(const P& policy, const typename P::row_type& terms, T S, T c,
                                                   bool is_target) {
  if (is_target) return {S * terms.target.value, terms.target.slope};
  if constexpr (P::plain_non_target) {
    (void)policy;
    return {S * c, T(1)};
  } else {
    const ValueSlope<T> vs = policy.non_target(c, terms);
    return {S * vs.value, vs.slope};
  }
}

// Online logsumexp: merges a span's (max m, sum of exp(z - m)) into a row's running pair, the
// same arithmetic as the CPU engine's merge (max in T, sums in double). An empty span (s = 0)
// changes nothing.
template <typename T>
MARGINLOSS_HD inline void merge_lse(T& run_max, double& run_sum, T m, double s) {
  if (!(s > 0)) return;
  if (m > run_max) {
    run_sum = (run_sum == 0 ? 0.0 : run_sum * std::exp(static_cast<double>(run_max - m))) + s;
    run_max = m;
  } else {
    run_sum += s * std::exp(static_cast<double>(m - run_max));
  }
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
