// marginloss::cuda: the three products of the loss through cuBLAS (docs/formulas.md §1):
//   K    = X^ W_b^T   (B x nb)   the block's cosines before the 1/|w_j| scaling
//   acc += G' W_b     (B x D)    v = G W^ summed over the blocks
//   dW_b = G'^T X^    (nb x D)   u, before the W-side projection
//
// Storage. Every matrix here is row-major: X^ (B x D, ld D), W (C x D, ld ldw), the cosine /
// gradient buffer K = G' (B x nb, ld nb), dX (B x D, ld lddx), dW (C x D, ld lddw). cuBLAS is
// column-major, and a row-major M (r x c, leading dimension ld) is, bit for bit, the
// column-major M^T (c x r, same ld). Each product is therefore written for the transposes:
//   K    = X^ W_b^T  <=>  K^T  = W_b X^T   : C_cm (nb x B)  = op_T(W_cm: D x nb) * X^_cm (D x B)
//   acc  = G' W_b    <=>  acc^T = W_b^T G'^T: C_cm (D x B) = W_cm (D x nb) * G'_cm (nb x B)
//   dW_b = G'^T X^   <=>  dW_b^T = X^T G'   : C_cm (D x nb) = X^_cm (D x B) * op_T(G'_cm: nb x B)
// where M_cm is the column-major reading of the row-major buffer (no copy, no transpose
// kernel). The leading dimensions are the row-major ones. Scalars are host values (the calls
// set CUBLAS_POINTER_MODE_HOST for their duration).
//
// Precision follows the handle's math mode: the default (CUBLAS_DEFAULT_MATH) gives full
// fp32 / fp64 products; a handle set to CUBLAS_TF32_TENSOR_OP_MATH trades fp32 accuracy for speed.
#pragma once

#include <climits>

#include <cublas_v2.h>

#include "../../value_slope.hpp"
#include "../check.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

inline cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C,
                           int ldc) {
  return cublasSgemm(h, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc);
}

inline cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           double alpha, const double* A, int lda, const double* B, int ldb, double beta, double* C,
                           int ldc) {
  return cublasDgemm(h, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc);
}

// Sizes were checked against INT_MAX by the entry points (the 32-bit cuBLAS API).
inline int as_int(Index v) { return static_cast<int>(v); }

// K (B x nb, ld nb) = X^ (B x D, ld D) * W_b^T (W_b: nb x D, ld ldw).
template <typename T>
inline void gemm_cosines(cublasHandle_t h, const T* xhat, Index batch, Index dim, const T* Wb, Index ldw, Index nb,
                         T* K) {
  MARGINLOSS_CUBLAS_CHECK(gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, as_int(nb), as_int(batch), as_int(dim), T(1), Wb,
                               as_int(ldw), xhat, as_int(dim), T(0), K, as_int(nb)));
}

// acc (B x D, ld ldacc) = (accumulate ? acc : 0) + G (B x nb, ld nb) * W_b (nb x D, ld ldw).
template <typename T>
inline void gemm_dx(cublasHandle_t h, const T* G, Index batch, Index nb, const T* Wb, Index ldw, Index dim,
                    bool accumulate, T* acc, Index ldacc) {
  MARGINLOSS_CUBLAS_CHECK(gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, as_int(dim), as_int(batch), as_int(nb), T(1), Wb,
                               as_int(ldw), G, as_int(nb), accumulate ? T(1) : T(0), acc, as_int(ldacc)));
}

// dW_b (nb x D, ld lddw) = G^T (G: B x nb, ld nb) * X^ (B x D, ld D).
template <typename T>
inline void gemm_dw(cublasHandle_t h, const T* G, Index batch, Index nb, const T* xhat, Index dim, T* dWb,
                    Index lddw) {
  MARGINLOSS_CUBLAS_CHECK(gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, as_int(dim), as_int(nb), as_int(batch), T(1), xhat,
                               as_int(dim), G, as_int(nb), T(0), dWb, as_int(lddw)));
}

// Sets the handle's stream (only where it differs: cublasSetStream also resets a workspace set
// with cublasSetWorkspace) and host pointer mode for one call, and restores both after.
class CublasScope {
 public:
  CublasScope(cublasHandle_t handle, cudaStream_t stream) : handle_(handle) {
    MARGINLOSS_CUBLAS_CHECK(cublasGetStream(handle_, &old_stream_));
    MARGINLOSS_CUBLAS_CHECK(cublasGetPointerMode(handle_, &old_mode_));
    if (old_stream_ != stream) MARGINLOSS_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    restore_stream_ = old_stream_ != stream;
    if (old_mode_ != CUBLAS_POINTER_MODE_HOST) MARGINLOSS_CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST));
  }
  ~CublasScope() {
    // Errors here cannot be thrown; the next cuBLAS call reports a broken handle.
    if (old_mode_ != CUBLAS_POINTER_MODE_HOST) (void)cublasSetPointerMode(handle_, old_mode_);
    if (restore_stream_) (void)cublasSetStream(handle_, old_stream_);
  }
  CublasScope(const CublasScope&) = delete;
  CublasScope& operator=(const CublasScope&) = delete;

 private:
  cublasHandle_t handle_;
  cudaStream_t old_stream_ = nullptr;
  cublasPointerMode_t old_mode_ = CUBLAS_POINTER_MODE_HOST;
  bool restore_stream_ = false;
};

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
