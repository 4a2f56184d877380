// marginloss: the CPU engine's products through oneDNN (marginloss::onednn, which defines
// MARGINLOSS_PRODUCTS_ONEDNN and links libdnnl; detail/products.hpp includes this header).
//
// oneDNN's dnnl_sgemm computes C = alpha op(A) op(B) + beta C on ROW-MAJOR matrices, the
// engine's layout, so the engine's views go in as they are (pointer and row stride). oneDNN 2.x
// has a float GEMM only: double products stay with Eigen (has_gemm<double> is false).
//
// Threads: dnnl_sgemm runs on the OpenMP runtime it was built with (Debian's libdnnl: GNU
// OpenMP, libgomp, the runtime the engine uses; `ldd libdnnl.so.2`), with as many threads as
// omp_get_max_threads() of the calling thread. The engine calls it inside its own parallel
// region, one class tile per thread, where that is 1 (threads.hpp, serial_nested_regions):
// oneDNN's GEMM is then sequential and deterministic, and the tile products are the ones
// measured fastest (README, "Product backends": whole-matrix products with oneDNN's own
// threading were slower than one tile per thread).
//
// Memory: dnnl_sgemm mallocs its packing buffer on every call (one allocation per product,
// measured); the Workspace's own buffers stay allocation-free. Avoiding it would take oneDNN's
// matmul primitive with a user scratchpad, created per tile shape.
#pragma once

#include <dnnl.h>

#include <type_traits>

#include "../types.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {
namespace onednn {

template <typename T>
inline constexpr bool has_gemm = std::is_same_v<T, float>;

// C = op(A) op(B) + beta C with op(X) = X ('N') or X^T ('T'); C is m x n, the inner dimension
// k; ld* are the row strides. Returns false when oneDNN refuses the call (it validates its
// arguments and may fail to allocate its packing buffers); the caller then computes the same
// product with Eigen, so a failure costs speed, not correctness. Empty products are left to the
// caller as well (k = 0 with beta = 0 must still zero C).
inline bool gemm(char trans_a, char trans_b, Index m, Index n, Index k, const float* a, Index lda, const float* b,
                 Index ldb, float beta, float* c, Index ldc) {
  if (m <= 0 || n <= 0 || k <= 0) return false;
  return dnnl_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc) == dnnl_success;
}

}  // namespace onednn
}  // namespace detail
MARGINLOSS_NAMESPACE_END
