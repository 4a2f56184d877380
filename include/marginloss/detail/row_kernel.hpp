// marginloss: the row kernel -- every scalar step of one row of the loss, written once, free of
// Eigen and marked MARGINLOSS_HD. The CPU engine (engine.hpp, row_pass.hpp: the same steps over
// a tile of classes, with Eigen's vectorised exp) and the CUDA kernels (cuda/detail/) both call
// these functions, so the two backends compute each quantity with the same expression.
// docs/formulas.md §1, §7:
//   z_ij = S_i phi_ij,   phi_iy = f(t_i) (the target),   phi_ij = h(c_ij; row_i) otherwise
//   lse_i = max_i + log(sum_j exp(z_ij - max_i)),   L_i = max(0, lse_i - z_iy)
//   dL/dc_ij = coef (p_ij - delta_{j,y_i}) S_i phi'_ij,   coef = upstream gradient / B
//   dL/dS_i  = coef sum_j (p_ij - delta_{j,y_i}) z_ij / S_i    (feature-norm scale only)
#pragma once

#include <cmath>

#include "../config.hpp"
#include "../value_slope.hpp"
#include "math.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// ---- logits ----------------------------------------------------------------------------------

// z_ij = S h(c_ij; row) for a non-target class.
template <typename P, typename T = typename P::value_type>
MARGINLOSS_HD inline T non_target_logit(const P& policy, const typename P::row_type& terms, T S, T c) {
  if constexpr (P::plain_non_target) {
    (void)policy;
    (void)terms;
    return S * c;
  } else {
    return S * policy.non_target(c, terms).value;
  }
}

// z_iy = S f(t_i): from the row terms, never from c_iy.
template <typename R, typename T>
MARGINLOSS_HD inline T target_logit(const R& terms, T S) {
  return S * terms.target.value;
}

template <typename P, typename T = typename P::value_type>
MARGINLOSS_HD inline T logit(const P& policy, const typename P::row_type& terms, T S, T c, bool is_target) {
  return is_target ? target_logit(terms, S) : non_target_logit(policy, terms, S, c);
}

// z_ij and phi'_ij together (the backward pass needs both).
template <typename P, typename T = typename P::value_type>
MARGINLOSS_HD inline ValueSlope<T> logit_and_slope(const P& policy, const typename P::row_type& terms, T S, T c,
                                                   bool is_target) {
  if (is_target) return {target_logit(terms, S), terms.target.slope};
  if constexpr (P::plain_non_target) {
    (void)policy;
    return {S * c, T(1)};
  } else {
    const ValueSlope<T> vs = policy.non_target(c, terms);
    return {S * vs.value, vs.slope};
  }
}

// c_ij from the product K_ij = <x^_i, w_j> and 1/|w_j|, clamped to [-1, 1] (the target cosine
// from its own dot product the same way).
template <typename T>
MARGINLOSS_HD inline T cosine_from_dot(T dot, T w_inv) {
  return clamp_cosine(dot * w_inv);
}

// ---- the log-partition -----------------------------------------------------------------------

// Online logsumexp: merges a span's (max m, sum of exp(z - m)) into a row's running pair (max in
// T, sums in double). An empty span (s = 0) changes nothing. Spans are merged in a fixed order
// by every engine, so results repeat bit for bit.
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

// Sharded: a rank's sum of exp(z - run_max) re-expressed against the all-reduced maximum, so the
// ranks' sums can be added.
template <typename T>
MARGINLOSS_HD inline double rescale_sum_to_max(T run_max, double run_sum, T global_max) {
  return run_sum == 0 ? 0.0 : run_sum * std::exp(static_cast<double>(run_max - global_max));
}

// lse_i from the row's final (max, sum).
template <typename T>
MARGINLOSS_HD inline T finish_lse(T row_max, double row_sum) {
  return row_max + static_cast<T>(std::log(row_sum));
}

// a * b rounded to T: the volatile store keeps a compiler that contracts floating-point
// expressions (FMA) from fusing the product into a following addition.
template <typename T>
MARGINLOSS_HD inline T rounded_product(T a, T b) {
  volatile T p = a * b;
  return p;
}

// L_i = lse_i - z_iy with the target logit rounded to T exactly as the sweep used it: with FMA
// contraction (-march=native, -mfma, clang's default, nvcc's default) lse_i - S f(t) would be
// computed with the exact product against an lse made of the rounded one, leaving the product's
// rounding error (e.g. -1.5e12 at |x| = 1e20, where the exact loss is 0). The cross-entropy is
// >= 0.
template <typename R, typename T>
MARGINLOSS_HD inline T row_loss(T lse, const R& terms, T S) {
  const T l = lse - rounded_product(S, terms.target.value);
  return l > T(0) ? l : T(0);
}

// ---- the gradient ----------------------------------------------------------------------------

// p_ij - delta_{j,y_i} from p_ij = exp(z_ij - lse_i) (the CPU takes the exp vectorised by Eigen,
// the GPU one at a time).
template <typename T>
MARGINLOSS_HD inline T prob_minus_delta(T p, bool is_target) {
  return is_target ? p - T(1) : p;
}

// One entry of G' = dL/dc_ij * col_scale_j (col_scale = 1/|w_j| turns dL/dc into the factor of
// the dX and dW products): cs_col = coef S_i col_scale_j.
template <typename T>
MARGINLOSS_HD inline T gradient_entry(T p_minus_delta, T slope, T cs_col) {
  return p_minus_delta * slope * cs_col;
}

// dL/dS_i from the row's sum_j (p_ij - delta) z_ij (accumulated in double), for a feature-norm
// scale.
template <typename T>
MARGINLOSS_HD inline T dscale_share(double z_weighted, T coef, T S) {
  return static_cast<T>(z_weighted * static_cast<double>(coef) / static_cast<double>(S));
}

// ---- row norms -------------------------------------------------------------------------------

// ||row|| in double over the entries k = first, first + step, ... < n, combined across the
// cooperating threads by `reduce` (its sum(double) and max(double); the identity for one thread,
// a warp reduction on the GPU). The plain sum of squares, and where that under- or overflows
// (double inputs far from 1 only) the sum rescaled by the largest magnitude. One thread with
// step 1 takes eight independent partial sums: the compiler vectorises them (one serial chain of
// double adds would not), and the fixed order keeps the result independent of threads.
template <typename T, typename Reduce>
MARGINLOSS_HD inline double rescaled_row_norm(const T* row, Index n, Index first, Index step, const Reduce& reduce) {
  double sum = 0;
  if (step == 1 && first == 0) {
    constexpr Index lanes = 8;
    double part[lanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    Index k = 0;
    for (; k + lanes <= n; k += lanes)
      for (Index u = 0; u < lanes; ++u) {
        const double v = static_cast<double>(row[k + u]);
        part[u] += v * v;
      }
    for (Index u = 0; k < n; ++k, ++u) {
      const double v = static_cast<double>(row[k]);
      part[u] += v * v;
    }
    sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  } else {
    for (Index k = first; k < n; k += step) {
      const double v = static_cast<double>(row[k]);
      sum += v * v;
    }
  }
  sum = reduce.sum(sum);
  if (sum > 1e-290 && sum < 1e290) return std::sqrt(sum);
  double big = 0;
  for (Index k = first; k < n; k += step) big = std::fmax(big, std::fabs(static_cast<double>(row[k])));
  big = reduce.max(big);
  if (!(big > 0) || !std::isfinite(big)) return std::isnan(big) ? big : (big > 0 ? big : 0.0);
  double scaled = 0;
  for (Index k = first; k < n; k += step) {
    const double v = static_cast<double>(row[k]) / big;
    scaled += v * v;
  }
  return big * std::sqrt(reduce.sum(scaled));
}

// The reduction of one thread working alone.
struct SerialReduce {
  MARGINLOSS_HD double sum(double v) const { return v; }
  MARGINLOSS_HD double max(double v) const { return v; }
};

}  // namespace detail
MARGINLOSS_NAMESPACE_END
