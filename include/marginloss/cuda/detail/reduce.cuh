// marginloss::cuda: launch shape and deterministic warp / block reductions. Every kernel of the
// backend runs blocks of kThreads threads; reductions use a fixed butterfly and a fixed order of
// the per-warp partials, so results are identical from run to run (no floating-point atomics).
#pragma once

#include <cuda_runtime.h>

#include "../../config.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

inline constexpr int kThreads = 256;
inline constexpr int kWarp = 32;
inline constexpr int kWarpsPerBlock = kThreads / kWarp;

template <typename V>
__device__ inline V warp_sum(V v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename V>
__device__ inline V warp_max(V v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const V other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

// fmax semantics (a NaN loses against a number), as std::fmax in the CPU's norm.
__device__ inline double warp_fmax(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Block-wide reductions, the result on every thread. Call from every thread of a block of
// kThreads threads; `scratch` is a __shared__ array of kWarpsPerBlock values.
template <typename V>
__device__ inline V block_sum(V v, V* scratch) {
  v = warp_sum(v);
  __syncthreads();  // a previous reduction may still read scratch
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = v;
  __syncthreads();
  V total = scratch[0];
  for (int w = 1; w < kWarpsPerBlock; ++w) total += scratch[w];
  return total;
}

template <typename V>
__device__ inline V block_max(V v, V* scratch) {
  v = warp_max(v);
  __syncthreads();
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = v;
  __syncthreads();
  V best = scratch[0];
  for (int w = 1; w < kWarpsPerBlock; ++w) best = scratch[w] > best ? scratch[w] : best;
  return best;
}

// Grid sizes (a kernel launched with zero blocks is an error: callers skip empty launches).
inline unsigned int blocks_for(long long items, long long per_block) {
  return static_cast<unsigned int>((items + per_block - 1) / per_block);
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
