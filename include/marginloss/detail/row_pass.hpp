// marginloss: the CPU's row pass -- the row kernel (row_kernel.hpp, shared with the CUDA
// kernels) applied to a span of one row's cosines, a tile at a time, with Eigen's vectorised exp.
// Every CPU engine (dense, class-chunked, sharded, cosine-level) calls it. docs/formulas.md §1:
//   z_ij = S_i phi_ij,  phi_iy = f(t_i),  phi_ij = h(c_ij; row_i)
//   L_i  = logsumexp_j z_ij - z_iy            (evaluated with the row maximum subtracted)
//   dL/dc_ij = coef (p_ij - delta_{j,y_i}) S_i phi'_ij,  coef = upstream gradient / B
//   dL/dS_i  = coef sum_j (p_ij - delta_{j,y_i}) phi_ij       (feature-norm scale only)
// A span is c[0, n) with the target at column `target` (or outside [0, n) when the target is
// not in this span). Work is done in tiles small enough for the stack, so the exponentials
// are vectorised and nothing is allocated.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "../types.hpp"
#include "math.hpp"
#include "row_kernel.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

inline constexpr Index kRowTile = 256;

template <typename P>
using row_terms_t = typename P::row_type;

// z = S phi over one tile; the target column gets S f(t).
template <typename P, typename T = typename P::value_type>
inline void tile_logits(const P& policy, const row_terms_t<P>& terms, T S, const T* c, Index n, Index target, T* z) {
  for (Index j = 0; j < n; ++j) z[j] = non_target_logit(policy, terms, S, c[j]);
  if (target >= 0 && target < n) z[target] = target_logit(terms, S);
}

// max_j z_ij over the span (-inf for an empty span).
template <typename P, typename T = typename P::value_type>
inline T span_max_logit(const P& policy, const row_terms_t<P>& terms, T S, const T* c, Index n, Index target) {
  alignas(64) T z[kRowTile];
  T best = -std::numeric_limits<T>::infinity();
  for (Index j0 = 0; j0 < n; j0 += kRowTile) {
    const Index len = std::min(kRowTile, n - j0);
    tile_logits(policy, terms, S, c + j0, len, target - j0, z);
    best = std::max(best, Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(z, len).maxCoeff());
  }
  return best;
}

// sum_j exp(z_ij - shift) over the span, accumulated in double across tiles.
template <typename P, typename T = typename P::value_type>
inline double span_sum_exp(const P& policy, const row_terms_t<P>& terms, T S, const T* c, Index n, Index target,
                           T shift) {
  alignas(64) T z[kRowTile];
  double sum = 0;
  for (Index j0 = 0; j0 < n; j0 += kRowTile) {
    const Index len = std::min(kRowTile, n - j0);
    tile_logits(policy, terms, S, c + j0, len, target - j0, z);
    Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> zt(z, len);
    sum += static_cast<double>((zt - shift).exp().sum());
  }
  return sum;
}

// (max_j z_ij, sum_j exp(z_ij - max)) over the span in one evaluation of the logits when the
// span fits one tile (the engine's class tiles do), else from the two functions above. With
// `col_scale`, c holds raw dot products on entry and the clamped cosines c_j = K_j col_scale[j]
// on return, formed in the same sweep as the logits.
template <typename P, typename T = typename P::value_type>
inline std::pair<T, double> span_max_sum_exp(const P& policy, const row_terms_t<P>& terms, T S, T* c, Index n,
                                             Index target, const T* col_scale = nullptr) {
  if (n <= 0) return {-std::numeric_limits<T>::infinity(), 0.0};
  if (n > kRowTile) {
    if (col_scale)
      for (Index j = 0; j < n; ++j) c[j] = cosine_from_dot(c[j], col_scale[j]);
    const T m = span_max_logit(policy, terms, S, c, n, target);
    return {m, span_sum_exp(policy, terms, S, c, n, target, m)};
  }
  alignas(64) T z[kRowTile];
  if constexpr (P::plain_non_target) {
    if (col_scale) {
      for (Index j = 0; j < n; ++j) {
        const T v = cosine_from_dot(c[j], col_scale[j]);
        c[j] = v;
        z[j] = non_target_logit(policy, terms, S, v);
      }
      if (target >= 0 && target < n) z[target] = target_logit(terms, S);
    } else {
      tile_logits(policy, terms, S, c, n, target, z);
    }
  } else {
    if (col_scale)
      for (Index j = 0; j < n; ++j) c[j] = cosine_from_dot(c[j], col_scale[j]);
    tile_logits(policy, terms, S, c, n, target, z);
  }
  Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> zt(z, n);
  const T m = zt.maxCoeff();
  return {m, static_cast<double>((zt - m).exp().sum())};
}

// Writes out[j] = g_j = dL/dc_ij * col_scale[j] (col_scale may be null: 1) for the span, given
// the row's log-partition `lse`: row_kernel.hpp's gradient_entry, with p = exp(z - lse) taken
// vectorised. `out` may alias `c`. Returns sum_j (p_ij - delta) z_ij, from which the
// feature-norm engines take dL/dS_i (dscale_share; 0 when the policy's scale is not the
// feature norm).
// Optional accumulators for the engine's W-side projection (null: not computed):
//   col_radial[j] += g_j c_ij   (summed over rows: the radial part of column j's dW, since
//                                <x^_i, w^_j> = c_ij)
//   *abs_sum      += sum_j |g_j| (a bound on every entry of the span's dW, see engine.hpp)
template <typename P, typename T = typename P::value_type>
inline double span_gradient(const P& policy, const row_terms_t<P>& terms, T S, const T* c, Index n, Index target,
                            T lse, T coef, const T* col_scale, T* out, T* col_radial = nullptr,
                            double* abs_sum = nullptr) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  alignas(64) T z[kRowTile];
  alignas(64) T p[kRowTile];
  alignas(64) T slope[P::plain_non_target ? 1 : kRowTile];
  double z_weighted = 0;
  // Only feature-norm scales need dL/dS_i (every caller ignores the value otherwise).
  const bool want_z_weighted = policy.scale_is_feature_norm();
  const T cs = coef * S;
  for (Index j0 = 0; j0 < n; j0 += kRowTile) {
    const Index len = std::min(kRowTile, n - j0);
    const Index tj = target - j0;
    const bool has_target = tj >= 0 && tj < len;
    if constexpr (P::plain_non_target) {
      tile_logits(policy, terms, S, c + j0, len, tj, z);
    } else {
      for (Index j = 0; j < len; ++j) {
        const ValueSlope<T> vs = logit_and_slope(policy, terms, S, c[j0 + j], false);
        z[j] = vs.value;
        slope[j] = vs.slope;
      }
      if (has_target) z[tj] = target_logit(terms, S);
    }
    Eigen::Map<const Arr> zt(z, len);
    Eigen::Map<Arr> g(p, len);
    g = (zt - lse).exp();
    if (has_target) p[tj] = prob_minus_delta(p[tj], true);
    if (want_z_weighted) z_weighted += static_cast<double>((g * zt).sum());
    // p - delta -> G'. The target's slope is the policy's f'(t), not h'(c_iy).
    const T target_g =
        has_target ? gradient_entry(p[tj], terms.target.slope, col_scale ? cs * col_scale[target] : cs) : T(0);
    const auto slope_at = [&](Index j) {
      if constexpr (P::plain_non_target) {
        (void)j;
        return T(1);
      } else {
        return slope[j];
      }
    };
    if (col_scale) {
      const T* cj = col_scale + j0;
      for (Index j = 0; j < len; ++j) p[j] = gradient_entry(p[j], slope_at(j), cs * cj[j]);
    } else {
      for (Index j = 0; j < len; ++j) p[j] = gradient_entry(p[j], slope_at(j), cs);
    }
    if (has_target) p[tj] = target_g;
    if (col_radial) Eigen::Map<Arr>(col_radial + j0, len) += g * Eigen::Map<const Arr>(c + j0, len);
    if (abs_sum) *abs_sum += static_cast<double>(g.abs().sum());
    Eigen::Map<Arr>(out + j0, len) = g;
  }
  return z_weighted;
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
