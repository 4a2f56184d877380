// marginloss::cuda: the normalisation's chain rule (docs/formulas.md §1, as the CPU engine):
//   W side  dW_j = Q_j u_j,  Q_j = I - w^_j w^_j^T,  u_j = (G'^T X^)_j  (G' already carries 1/|w_j|)
//   X side  dX_i = (v_i - <v_i, x^_i> x^_i) / |x_i| + dL/dS_i x^_i,  v_i = (G' W)_i
// (the last term only for a feature-norm scale, e.g. SphereFace). Using <(G W^)_i, x^_i> and
// <u_j, w^_j> directly, neither r_i nor q_j of the formulas is accumulated. w^_j is formed
// element by element (w_jk / |w_j|), never as w / |w|^2, so nothing overflows. One warp per
// row; the dot products are accumulated in double. A non-finite result sets nonfinite_grad.
#pragma once

#include "../../value_slope.hpp"
#include "reduce.cuh"
#include "state.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// rows of dW (ld lddw) for the classes whose rows of W (ld ldw) and 1/|w_j| are given.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    project_w_kernel(T* dW, Index lddw, const T* W, Index ldw, const T* w_inv, Index rows, Index dim,
                     DeviceState<T>* state) {
  const Index j = static_cast<Index>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (j >= rows) return;  // whole warp
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  T* u = dW + j * lddw;
  const T* w = W + j * ldw;
  const T s = w_inv[j];
  double radial = 0;
  for (Index k = lane; k < dim; k += kWarp) radial += static_cast<double>(u[k]) * static_cast<double>(w[k] * s);
  const T r = static_cast<T>(warp_sum(radial));
  bool bad = false;
  for (Index k = lane; k < dim; k += kWarp) {
    const T v = u[k] - r * (w[k] * s);
    u[k] = v;
    bad = bad || !isfinite(v);
  }
  if (__any_sync(0xffffffffu, bad) && lane == 0) state->nonfinite_grad = 1;
}

// dX from the accumulated v = G' W (acc, ld ldacc; may be dX itself, then in place).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    project_x_kernel(const T* acc, Index ldacc, T* dX, Index lddx, const T* xhat, const T* x_inv, const T* dscale,
                     bool feature_norm, Index batch, Index dim, DeviceState<T>* state) {
  const Index i = static_cast<Index>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (i >= batch) return;  // whole warp
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const T* v = acc + i * ldacc;
  const T* xh = xhat + i * dim;
  T* out = dX + i * lddx;
  double radial = 0;
  for (Index k = lane; k < dim; k += kWarp) radial += static_cast<double>(v[k]) * static_cast<double>(xh[k]);
  const T r = static_cast<T>(warp_sum(radial));
  const T inv = x_inv[i];
  const T ds = dscale[i];
  bool bad = false;
  for (Index k = lane; k < dim; k += kWarp) {
    T o = (v[k] - r * xh[k]) * inv;
    if (feature_norm) o += ds * xh[k];
    out[k] = o;  // each lane writes only what it read: safe in place
    bad = bad || !isfinite(o);
  }
  if (__any_sync(0xffffffffu, bad) && lane == 0) state->nonfinite_grad = 1;
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
