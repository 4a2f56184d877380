// marginloss::cuda: the per-row pass on the device, the same algorithm as the CPU engine
// (detail/engine.hpp, detail/row_pass.hpp; docs/formulas.md §1, §7) with the per-logit
// expressions shared through the row kernel (detail/row_kernel.hpp) and the policies'
// MARGINLOSS_HD functions:
//
//   t_i        from its own dot product x^_i . w_{y_i} / |w_{y_i}| (on the rank owning y_i),
//              so the once-per-row terms (margined target, mining threshold) are known first;
//   forward    per block of classes, c_ij = clamp(K_ij / |w_j|) written back in place, each
//              (row, segment) of the block gives its max logit and sum of exp(z - max) (in
//              double), merged into the row's running pair in segment order (online
//              logsumexp, merge_lse);
//   loss       lse_i = max_i + log(sum_i), L = mean_i (lse_i - S_i f(t_i)), summed in double;
//   backward   per block, G'_ij = coef (p_ij - delta) S_i phi'_ij / |w_j| in place of c_ij, and
//              for a feature-norm scale dL/dS_i += coef sum_j (p_ij - delta) z_ij / S_i.
//
// A row-pass block is one (row, segment) pair: gridDim.x = rows, gridDim.y = segments of at
// most `segment` columns. Every reduction has a fixed order, so results repeat bit for bit.
#pragma once

#include <cmath>

#include "../../detail/row_kernel.hpp"
#include "../../detail/math.hpp"
#include "../../value_slope.hpp"
#include "reduce.cuh"
#include "state.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

template <typename T>
__device__ inline T negative_infinity() {
  return static_cast<T>(-INFINITY);
}

// What a thread block of the forward and backward block kernels needs of its (row i =
// blockIdx.x, segment seg = blockIdx.y) of a block of nb classes: the row's cosines c (ld nb),
// the columns [begin, end) it sweeps, the row's policy terms and scale, and the target's column in
// the block (a bad label, -1, is never in [0, nb)).
template <typename P, typename T = typename P::value_type>
struct RowSegment {
  Index i, seg, begin, end, target_col;
  T* c;
  typename P::row_type terms;
  T S;
};

template <typename P, typename T = typename P::value_type>
__device__ inline RowSegment<P> row_segment(const P& policy, T* cos, Index nb, Index segment, const T* target,
                                            const T* x_norm, const long long* labels, Index class_base) {
  const Index i = blockIdx.x, seg = blockIdx.y, begin = seg * segment;
  return {i,
          seg,
          begin,
          nb < begin + segment ? nb : begin + segment,
          static_cast<Index>(labels[i]) - class_base,
          cos + i * nb,
          policy.row(target[i], static_cast<Index>(labels[i])),
          policy.scale(x_norm[i])};
}

// One warp per row i: t_i = clamp(<x^_i, w_local> / |w_local|) where this rank owns y_i, else
// 0 (a sharded call sums t over the ranks: one owner per row). Also starts the row's online
// logsumexp (max = -inf, sum = 0).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    target_cosines_kernel(const T* xhat, Index batch, Index dim, const T* W, Index ldw, const T* w_inv,
                          Index local_classes, Index class_offset, const long long* labels, T* target, T* row_max,
                          double* row_sum) {
  const Index i = static_cast<Index>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (i >= batch) return;  // whole warp
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const long long y = labels[i];
  const Index local = y < 0 ? Index(-1) : static_cast<Index>(y) - class_offset;
  T t = T(0);
  if (local >= 0 && local < local_classes) {
    const T* w = W + local * ldw;
    const T* xh = xhat + i * dim;
    double dot = 0;
    for (Index k = lane; k < dim; k += kWarp) dot += static_cast<double>(xh[k]) * static_cast<double>(w[k]);
    dot = warp_sum(dot);
    t = marginloss::detail::cosine_from_dot(static_cast<T>(dot), w_inv[local]);
  }
  if (lane == 0) {
    target[i] = t;
    row_max[i] = negative_infinity<T>();
    row_sum[i] = 0.0;
  }
}

// Forward over one block of nb classes (cos: B x nb, ld nb, holding K = X^ W_b^T; w_inv, the
// block's 1/|w_j|; class_base = class_offset + the block's first class). Writes the clamped
// cosines back, then either merges the row's (max, sum) directly (one segment per row) or
// leaves them in part_max / part_sum for merge_segments_kernel.
template <typename P, typename T = typename P::value_type>
__global__ void __launch_bounds__(kThreads)
    forward_block_kernel(P policy, T* cos, Index nb, Index segment, Index segments, const T* w_inv, const T* target,
                         const T* x_norm, const long long* labels, Index class_base, T* part_max, double* part_sum,
                         T* row_max, double* row_sum) {
  __shared__ T max_scratch[kWarpsPerBlock];
  __shared__ double sum_scratch[kWarpsPerBlock];
  const RowSegment<P> r = row_segment(policy, cos, nb, segment, target, x_norm, labels, class_base);

  T m = negative_infinity<T>();
  for (Index j = r.begin + threadIdx.x; j < r.end; j += kThreads) {
    const T cj = marginloss::detail::cosine_from_dot(r.c[j], w_inv[j]);
    r.c[j] = cj;
    const T z = marginloss::detail::logit(policy, r.terms, r.S, cj, j == r.target_col);
    m = z > m ? z : m;
  }
  m = block_max(m, max_scratch);
  double s = 0;
  for (Index j = r.begin + threadIdx.x; j < r.end; j += kThreads) {
    const T z = marginloss::detail::logit(policy, r.terms, r.S, r.c[j], j == r.target_col);
    s += static_cast<double>(std::exp(z - m));
  }
  s = block_sum(s, sum_scratch);
  if (threadIdx.x == 0) {
    if (segments == 1) {
      marginloss::detail::merge_lse(row_max[r.i], row_sum[r.i], m, s);
    } else {
      part_max[r.i * segments + r.seg] = m;
      part_sum[r.i * segments + r.seg] = s;
    }
  }
}

// One thread per row: merges the block's segments into the running pair, in segment order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    merge_segments_kernel(Index batch, Index segments, const T* part_max, const double* part_sum, T* row_max,
                          double* row_sum) {
  const Index i = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= batch) return;
  T m = row_max[i];
  double s = row_sum[i];
  for (Index seg = 0; seg < segments; ++seg)
    marginloss::detail::merge_lse(m, s, part_max[i * segments + seg], part_sum[i * segments + seg]);
  row_max[i] = m;
  row_sum[i] = s;
}

// Sharded: each rank rescales its sum to the all-reduced maximum before the sums are reduced.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    rescale_to_global_max_kernel(Index batch, const T* global_max, T* row_max, double* row_sum) {
  const Index i = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= batch) return;
  row_sum[i] = marginloss::detail::rescale_sum_to_max(row_max[i], row_sum[i], global_max[i]);
  row_max[i] = global_max[i];
}

// One block: lse_i = max_i + log(sum_i), the batch-mean loss (row losses summed in double in a
// fixed order), its finiteness, and whether this rank's forward failed. Writes the loss to
// state->loss and, when not null, to *loss_out.
template <typename P, typename T = typename P::value_type>
__global__ void __launch_bounds__(kThreads)
    loss_kernel(P policy, Index batch, const T* target, const T* x_norm, const long long* labels, const T* row_max,
                const double* row_sum, T* lse, DeviceState<T>* state, T* loss_out) {
  __shared__ double scratch[kWarpsPerBlock];
  double total = 0;
  for (Index i = threadIdx.x; i < batch; i += kThreads) {
    const T l = marginloss::detail::finish_lse(row_max[i], row_sum[i]);
    lse[i] = l;
    const auto terms = policy.row(target[i], static_cast<Index>(labels[i]));
    total += static_cast<double>(marginloss::detail::row_loss(l, terms, policy.scale(x_norm[i])));
  }
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) {
    const T loss = static_cast<T>(total / static_cast<double>(batch));
    state->loss = loss;
    state->regulariser = T(0);
    if (!isfinite(loss)) state->nonfinite_loss = 1;
    // A forward error recorded since the host last looked (sticky flags): this call's or an
    // unchecked earlier one's. (Sharded: summed over the ranks next.)
    const bool failed = state->x.row != kNoRow || state->w.row != kNoRow || state->bad_label_row != kNoRow ||
                        state->bad_class != kNoRow || state->nonfinite_loss;
    state->failed = failed ? 1.0 : 0.0;
    if (loss_out) *loss_out = loss;
  }
}

// Before a backward: dL/dS_i = 0 and the upstream gradient (from device memory when given),
// recorded when it is not finite.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    begin_backward_kernel(Index batch, T* dscale, const T* grad_loss_device, T grad_loss, DeviceState<T>* state) {
  const Index i = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < batch) dscale[i] = T(0);
  if (i == 0) {
    const T g = grad_loss_device ? *grad_loss_device : grad_loss;
    state->grad_loss = g;
    if (!isfinite(g)) {
      state->bad_grad_loss = 1;
      state->bad_grad_loss_value = g;
    }
  }
}

// Backward over one block: G'_ij = dL/dc_ij / |w_j| in place of c_ij (recomputing c from K
// when the block was not kept from the forward), and the feature-norm scale's share
// coef sum_j (p_ij - delta) z_ij, added to dscale[i] / S_i directly (one segment per row) or
// left in part_sum for dscale_kernel.
template <typename P, typename T = typename P::value_type>
__global__ void __launch_bounds__(kThreads)
    backward_block_kernel(P policy, T* cos, Index nb, Index segment, Index segments, bool recompute, const T* w_inv,
                          const T* target, const T* x_norm, const long long* labels, Index class_base, const T* lse,
                          Index batch, const DeviceState<T>* state, bool feature_norm, double* part_sum,
                          T* dscale) {
  __shared__ double scratch[kWarpsPerBlock];
  const RowSegment<P> r = row_segment(policy, cos, nb, segment, target, x_norm, labels, class_base);
  const T coef = state->grad_loss / static_cast<T>(batch);
  const T cs = coef * r.S;
  const T row_lse = lse[r.i];

  double z_weighted = 0;
  for (Index j = r.begin + threadIdx.x; j < r.end; j += kThreads) {
    const T cj = recompute ? marginloss::detail::cosine_from_dot(r.c[j], w_inv[j]) : r.c[j];
    const bool is_target = j == r.target_col;
    const ValueSlope<T> zs = marginloss::detail::logit_and_slope(policy, r.terms, r.S, cj, is_target);
    const T p = marginloss::detail::prob_minus_delta(static_cast<T>(std::exp(zs.value - row_lse)), is_target);
    z_weighted += static_cast<double>(p * zs.value);
    r.c[j] = marginloss::detail::gradient_entry(p, zs.slope, cs * w_inv[j]);
  }
  if (feature_norm) {  // uniform over the block
    z_weighted = block_sum(z_weighted, scratch);
    if (threadIdx.x == 0) {
      if (segments == 1)
        dscale[r.i] += marginloss::detail::dscale_share(z_weighted, coef, r.S);
      else
        part_sum[r.i * segments + r.seg] = z_weighted;
    }
  }
}

// One thread per row: the block's feature-norm share from its segments, in segment order.
template <typename P, typename T = typename P::value_type>
__global__ void __launch_bounds__(kThreads)
    dscale_kernel(P policy, Index batch, Index segments, const double* part_sum, const T* x_norm,
                  const DeviceState<T>* state, T* dscale) {
  const Index i = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= batch) return;
  double z_weighted = 0;
  for (Index seg = 0; seg < segments; ++seg) z_weighted += part_sum[i * segments + seg];
  const T coef = state->grad_loss / static_cast<T>(batch);
  dscale[i] += marginloss::detail::dscale_share(z_weighted, coef, policy.scale(x_norm[i]));
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
