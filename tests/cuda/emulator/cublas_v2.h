// TEST EMULATOR, NOT A CUDA IMPLEMENTATION: stands in for cuBLAS's cublas_v2.h in the
// `cuda_emulated` test (see emulator.hpp). The handle calls and the GEMMs that the CUDA backend
// uses; the GEMM is the reference BLAS definition (column-major, C = alpha op(A) op(B) + beta C,
// a plain triple loop in the operands' type), with cuBLAS's argument checks: a bad size or
// leading dimension returns CUBLAS_STATUS_INVALID_VALUE, and each operand must lie inside one
// device allocation. Only the host pointer mode is emulated (the backend sets it).
#pragma once

#include <algorithm>
#include <cstddef>

#include "cuda_runtime_api.h"

typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 } cublasPointerMode_t;

namespace mlcuda_emulator {
struct CublasContext {
  cudaStream_t stream = nullptr;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};
}  // namespace mlcuda_emulator
typedef mlcuda_emulator::CublasContext* cublasHandle_t;

inline const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
inline const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
  }
  return "unknown error";
}

inline cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new mlcuda_emulator::CublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetPointerMode(cublasHandle_t handle, cublasPointerMode_t* mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

namespace mlcuda_emulator {

// An operand of `rows` x `cols` (column-major, leading dimension ld) lies in one allocation.
template <typename T>
void check_operand(const T* p, int rows, int cols, int ld, const char* what) {
  if (rows == 0 || cols == 0) return;
  const std::size_t elements = static_cast<std::size_t>(cols - 1) * static_cast<std::size_t>(ld) + static_cast<std::size_t>(rows);
  check_device_range(p, elements * sizeof(T), what);
}

template <typename T>
cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    const T* alpha, const T* A, int lda, const T* B, int ldb, const T* beta, T* C, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (handle->pointer_mode != CUBLAS_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED;
  const int rows_a = ta == CUBLAS_OP_N ? m : k, cols_a = ta == CUBLAS_OP_N ? k : m;
  const int rows_b = tb == CUBLAS_OP_N ? k : n, cols_b = tb == CUBLAS_OP_N ? n : k;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, rows_a) || ldb < std::max(1, rows_b) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  check_operand(C, m, n, ldc, "cublas<t>gemm (C)");
  if (k > 0 && *alpha != T(0)) {
    check_operand(A, rows_a, cols_a, lda, "cublas<t>gemm (A)");
    check_operand(B, rows_b, cols_b, ldb, "cublas<t>gemm (B)");
  }
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      T acc = T(0);
      for (int p = 0; p < k; ++p) {
        const T a = ta == CUBLAS_OP_N ? A[i + static_cast<std::size_t>(p) * lda] : A[p + static_cast<std::size_t>(i) * lda];
        const T b = tb == CUBLAS_OP_N ? B[p + static_cast<std::size_t>(j) * ldb] : B[j + static_cast<std::size_t>(p) * ldb];
        acc += a * b;
      }
      T& c = C[i + static_cast<std::size_t>(j) * ldc];
      // beta = 0: C is not read (it may hold NaN), as in BLAS.
      c = *beta == T(0) ? *alpha * acc : *alpha * acc + *beta * c;
    }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace mlcuda_emulator

inline cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* A, int lda, const float* B, int ldb,
                                  const float* beta, float* C, int ldc) {
  return mlcuda_emulator::gemm(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline cublasStatus_t cublasDgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const double* alpha, const double* A, int lda, const double* B, int ldb,
                                  const double* beta, double* C, int ldc) {
  return mlcuda_emulator::gemm(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
