// marginloss::cuda: labels checked on the device. Any integer type (int32, int64 from PyTorch,
// unsigned); a label outside [0, num_classes) is recorded (the first one, for the message) and
// stored as -1, which no class block matches, so later kernels never index with it.
#pragma once

#include <type_traits>

#include "../../detail/checks.hpp"
#include "../../value_slope.hpp"
#include "reduce.cuh"
#include "row_norms.cuh"
#include "state.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// y in [0, classes) in the label's own signedness: marginloss::detail::label_in_range
// (detail/checks.hpp), the CPU's rule.
using marginloss::detail::label_in_range;

template <typename L>
__global__ void __launch_bounds__(kThreads)
    labels_kernel(const L* labels, Index batch, Index classes, long long* out, unsigned long long* bad_row) {
  const Index i = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= batch) return;
  const L y = labels[i];
  const bool ok = label_in_range(y, classes);
  out[i] = ok ? static_cast<long long>(y) : -1;
  if (!ok) atomicMin(bad_row, static_cast<unsigned long long>(i));
}

template <typename L>
__host__ __device__ inline unsigned long long label_bits(L y) {
  if constexpr (std::is_unsigned_v<L>)
    return static_cast<unsigned long long>(y);
  else
    return static_cast<unsigned long long>(static_cast<long long>(y));
}

// One thread, after this call's checks: records its first bad label, X row and W row with
// the details the message needs, where none of that kind is recorded yet (the first error is
// kept until reported), and clears the call's indices for the next call.
template <typename T, typename L>
__global__ void describe_errors_kernel(const T* X, Index ldx, const T* W, Index ldw, Index dim, const L* labels,
                                       Index classes, DeviceState<T>* state) {
  if (state->call_label_row != kNoRow && state->bad_label_row == kNoRow) {
    state->bad_label_row = state->call_label_row;
    state->bad_label_bits = label_bits(labels[state->call_label_row]);
    state->bad_label_classes = static_cast<long long>(classes);
    state->bad_label_unsigned = std::is_unsigned_v<L> ? 1 : 0;
  }
  describe_bad_row(X, dim, ldx, state->call_x_row, state->x);
  describe_bad_row(W, dim, ldw, state->call_w_row, state->w);
  state->call_label_row = kNoRow;
  state->call_x_row = kNoRow;
  state->call_w_row = kNoRow;
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
