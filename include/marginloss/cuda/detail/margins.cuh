// marginloss::cuda: per-class margins on the device (AdaptiveMargin, ClassMargins): the check
// of every value, the regulariser R = w mean_{j in J} m_j added to the loss, and dL/dmargins.
// The policies hold a ClassValues view of device memory; the formulas are the CPU engine's
// (detail/engine.hpp: margin_regulariser, the dmargins loop, add_margin_regulariser_gradient).
//
// Determinism: no floating-point atomics. dL/dm of a class is accumulated in batch order by the
// thread of its first row (the rows' classes may repeat), R by one block in a fixed order; the set J of the
// batch's distinct classes is "rows whose label no earlier row has" (O(B^2 / threads) compares,
// no sort and no buffer).
#pragma once

#include "../../detail/row_kernel.hpp"
#include "reduce.cuh"
#include "state.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// Every value acceptable to the policy; the first bad class (atomicMin) for the message.
template <typename P>
__global__ void __launch_bounds__(kThreads) class_values_kernel(P policy, Index classes, unsigned long long* bad_class) {
  const Index k = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= classes) return;
  const auto values = policy.class_values();
  if (!policy.class_value_ok(values[k])) atomicMin(bad_class, static_cast<unsigned long long>(k));
}

// One thread, after class_values_kernel: records the first bad class and its value where no
// such error is recorded yet (kept until reported), and clears the call's index.
template <typename P, typename T = typename P::value_type>
__global__ void describe_class_error_kernel(P policy, DeviceState<T>* state) {
  if (state->call_class != kNoRow && state->bad_class == kNoRow) {
    state->bad_class = state->call_class;
    state->bad_class_value = static_cast<double>(policy.class_values()[static_cast<Index>(state->call_class)]);
  }
  state->call_class = kNoRow;
}

// True when row i's label is the first occurrence of that class in the batch (a label stored
// as -1 by labels_kernel, i.e. rejected, never counts).
__device__ inline bool first_of_its_class(const long long* labels, Index i) {
  const long long y = labels[i];
  if (y < 0) return false;
  for (Index j = 0; j < i; ++j)
    if (labels[j] == y) return false;
  return true;
}

// One block of kThreads, after loss_kernel: R over J (the batch's distinct classes, or all
// classes), added to the loss (state, loss_out); |J| kept for the backward.
template <typename P, typename T = typename P::value_type>
__global__ void __launch_bounds__(kThreads)
    regulariser_kernel(P policy, Index batch, Index classes, const long long* labels, DeviceState<T>* state, T* loss_out) {
  __shared__ double scratch[kWarpsPerBlock];
  const auto m = policy.class_values();
  double sum = 0, count = 0;
  if (policy.regulariser_over_batch()) {
    for (Index i = threadIdx.x; i < batch; i += kThreads)
      if (first_of_its_class(labels, i)) {
        sum += static_cast<double>(m[static_cast<Index>(labels[i])]);
        count += 1;
      }
    count = block_sum(count, scratch);
  } else {
    // Four independent partial sums per thread keep four loads in flight (latency-bound over
    // C values in one block), combined in a fixed order.
    double part[4] = {0, 0, 0, 0};
    Index k = threadIdx.x;
    for (; k + 3 * kThreads < classes; k += 4 * kThreads)
      for (int u = 0; u < 4; ++u) part[u] += static_cast<double>(m[k + u * kThreads]);
    for (; k < classes; k += kThreads) part[0] += static_cast<double>(m[k]);
    sum = (part[0] + part[1]) + (part[2] + part[3]);
    count = static_cast<double>(classes);
  }
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) {
    const T r = count > 0 ? static_cast<T>(static_cast<double>(policy.regulariser_weight()) * (sum / count)) : T(0);
    const T loss = state->loss + r;
    state->regulariser = r;
    state->regulariser_classes = count;
    state->loss = loss;
    if (!isfinite(loss)) {
      state->nonfinite_loss = 1;
      state->failed = 1.0;
    }
    if (loss_out) *loss_out = loss;
  }
}

// One thread per row: the row that is the first of its class sums, in batch order, the terms
// g/B (p_iy - 1) S_i df/dm of every row of that class and writes dm[y] (the CPU's order, 0 plus
// the terms; dm = 0 elsewhere was set). g is the upstream gradient recorded by
// begin_backward_kernel. Parallel over classes, deterministic: no atomics.
template <typename P, typename T = typename P::value_type>
__global__ void __launch_bounds__(kThreads) dmargins_kernel(P policy, Index batch, const T* target, const T* x_norm,
                                                            const long long* labels, const T* lse,
                                                            const DeviceState<T>* state, T* dm) {
  const Index i = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= batch || !first_of_its_class(labels, i)) return;
  const long long y = labels[i];
  const T coef = state->grad_loss / static_cast<T>(batch);
  T acc = T(0);
  for (Index j = i; j < batch; ++j) {
    if (labels[j] != y) continue;
    const auto terms = policy.row(target[j], static_cast<Index>(y));
    const T S = policy.scale(x_norm[j]);
    const T p = std::exp(S * terms.target.value - lse[j]);
    acc += coef * (p - T(1)) * S * terms.dtarget_dmargin;
  }
  dm[y] = acc;
}

// dm += g w / |J| on J, then every entry the batch or the regulariser touched is checked: all
// classes (one thread each), or the batch's classes (rows first of their class).
template <typename P, typename T = typename P::value_type>
__global__ void __launch_bounds__(kThreads)
    regulariser_gradient_kernel(P policy, Index batch, Index classes, const long long* labels, DeviceState<T>* state,
                                T* dm) {
  const T g = state->grad_loss * policy.regulariser_weight() / static_cast<T>(state->regulariser_classes);
  const Index k = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x;
  bool bad = false;
  if (policy.regulariser_over_batch()) {
    // Launched with enough threads for the batch.
    if (k < batch && first_of_its_class(labels, k)) {
      T& v = dm[labels[k]];
      v += g;
      bad = !isfinite(v);
    }
  } else if (k < classes) {
    T& v = dm[k];
    v += g;
    bad = !isfinite(v);
  }
  if (bad) state->nonfinite_grad = 1;
}

// One block: the mean of B values in double, in a fixed order (the state hook's statistic; the
// CPU sums in row order, so the two agree to rounding, not bit for bit).
template <typename T>
__global__ void __launch_bounds__(kThreads) batch_mean_kernel(const T* v, Index batch, double* out) {
  __shared__ double scratch[kWarpsPerBlock];
  double sum = 0;
  for (Index i = threadIdx.x; i < batch; i += kThreads) sum += static_cast<double>(v[i]);
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) *out = sum / static_cast<double>(batch);
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
