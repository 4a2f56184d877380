// marginloss::cuda: row norms of X and W in double with the CPU's checks (detail/row_norms.hpp):
// a row is rejected when its norm is zero, non-finite or outside NormLimits<T>; the first
// rejected row is recorded (atomicMin) and described for the host's message. Also writes
// X^ = X / |x| and keeps |x_i|, 1/|x_i| (and 1/|w_j|) for the backward.
#pragma once

#include <cmath>

#include "../../value_slope.hpp"
#include "norm_limits.cuh"
#include "reduce.cuh"
#include "state.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// ||row|| in double by one warp (every lane gets it). The plain sum of squares, and where that
// under- or overflows (double inputs far from 1 only) the sum rescaled by the largest
// magnitude, as stable_row_norm on the CPU.
template <typename T>
__device__ inline double warp_row_norm(const T* row, Index n, int lane) {
  double sum = 0;
  for (Index k = lane; k < n; k += kWarp) {
    const double v = static_cast<double>(row[k]);
    sum += v * v;
  }
  sum = warp_sum(sum);
  if (sum > 1e-290 && sum < 1e290) return sqrt(sum);
  double big = 0;
  for (Index k = lane; k < n; k += kWarp) big = fmax(big, fabs(static_cast<double>(row[k])));
  big = warp_fmax(big);
  if (!(big > 0) || !isfinite(big)) return isnan(big) ? big : (big > 0 ? big : 0.0);
  double scaled = 0;
  for (Index k = lane; k < n; k += kWarp) {
    const double v = static_cast<double>(row[k]) / big;
    scaled += v * v;
  }
  return big * sqrt(warp_sum(scaled));
}

// The same by one thread, for the error message only.
template <typename T>
__device__ inline double serial_row_norm(const T* row, Index n) {
  double sum = 0;
  for (Index k = 0; k < n; ++k) sum += static_cast<double>(row[k]) * static_cast<double>(row[k]);
  if (sum > 1e-290 && sum < 1e290) return sqrt(sum);
  double big = 0;
  for (Index k = 0; k < n; ++k) big = fmax(big, fabs(static_cast<double>(row[k])));
  if (!(big > 0) || !isfinite(big)) return isnan(big) ? big : (big > 0 ? big : 0.0);
  double scaled = 0;
  for (Index k = 0; k < n; ++k) {
    const double v = static_cast<double>(row[k]) / big;
    scaled += v * v;
  }
  return big * sqrt(scaled);
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
  const bool ok = norm_accepted<T>(n);
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
  bad.norm = serial_row_norm(row, cols);
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
