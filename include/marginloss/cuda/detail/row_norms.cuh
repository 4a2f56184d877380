// marginloss::cuda: row norms of X and W in double with the CPU's checks (detail/row_norms.hpp):
// a row is rejected when its norm is zero, non-finite or outside detail::NormRange<T>; the first
// rejected row is recorded (atomicMin) and described for the host's message. Also writes
// X^ = X / |x| and keeps |x_i|, 1/|x_i| (and 1/|w_j|) for the backward. The norm itself is the
// row kernel's rescaled_row_norm.
#pragma once

#include <cmath>

#include "../../detail/row_kernel.hpp"
#include "../../value_slope.hpp"
#include "../../detail/norm_range.hpp"
#include "reduce.cuh"
#include "state.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// A warp's lanes combining their partial sums and maxima (every lane gets the result).
struct WarpReduce {
  __device__ double sum(double v) const { return warp_sum(v); }
  __device__ double max(double v) const { return warp_fmax(v); }
};

// ||row|| in double by one warp (every lane gets it): the CPU's rescaled_row_norm
// (detail/row_kernel.hpp) over the lane's strided entries, reduced across the warp.
template <typename T>
__device__ inline double warp_row_norm(const T* row, Index n, int lane) {
  return marginloss::detail::rescaled_row_norm(row, n, lane, kWarp, WarpReduce{});
}

// One warp per row of M (rows x cols, leading dimension ld): inv_norm[r] = 1/|m_r| (0 for a
// rejected row), norm[r] = |m_r| and normalised row r = m_r / |m_r| (ld = cols) where those
// are not null. The smallest rejected row index goes to *bad_row.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    row_norms_kernel(const T* M, Index rows, Index cols, Index ld, T* norm, T* inv_norm, T* normalised,
                     unsigned long long* bad_row) {
  const Index r = static_cast<Index>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (r >= rows) return;  // the whole warp: r is the same on every lane
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const T* row = M + r * ld;
  const double n = warp_row_norm(row, cols, lane);
  const bool ok = marginloss::detail::norm_accepted<T>(n);
  const T inv = ok ? static_cast<T>(1.0 / n) : T(0);
  if (lane == 0) {
    inv_norm[r] = inv;
    if (norm) norm[r] = ok ? static_cast<T>(n) : T(0);
    if (!ok) atomicMin(bad_row, static_cast<unsigned long long>(r));
  }
  if (normalised) {
    T* out = normalised + r * cols;
    for (Index k = lane; k < cols; k += kWarp) out[k] = inv * row[k];
  }
}

// Records this call's first bad row (`row`) unless an error of this kind is already recorded.
template <typename T>
__device__ inline void describe_bad_row(const T* M, Index cols, Index ld, unsigned long long row_index, BadRow& bad) {
  if (row_index == kNoRow || bad.row != kNoRow) return;
  bad.row = row_index;
  const T* row = M + static_cast<Index>(row_index) * ld;
  bad.col = -1;
  bad.value = 0;
  for (Index k = 0; k < cols; ++k)
    if (!isfinite(row[k])) {
      bad.col = k;
      bad.value = static_cast<double>(row[k]);
      break;
    }
  bad.norm = marginloss::detail::rescaled_row_norm(row, cols, 0, 1, marginloss::detail::SerialReduce{});
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
