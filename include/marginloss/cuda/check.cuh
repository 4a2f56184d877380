// marginloss::cuda: failed CUDA runtime and cuBLAS calls as exceptions that name the call.
//
// Bad input (shapes, labels, rows, hyper-parameters) throws marginloss::invalid_argument, as on
// the CPU; a failing CUDA or cuBLAS call (no device, out of memory, an illegal address, ...)
// throws marginloss::cuda_error, whose message starts with "marginloss:" and names the call,
// the status name and its description.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "../config.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// Thrown by the CUDA backend when a CUDA runtime or cuBLAS call fails (no device, out of
/// memory, an illegal address, ...); the message names the call, the status and its
/// description. Bad input throws marginloss::invalid_argument instead, as on the CPU; a failing
/// NCCL call marginloss::communication_error (errors.hpp), as a failing MPI call does.
class cuda_error : public std::runtime_error {
 public:
  /// `what()` is "marginloss: " followed by `what`.
  explicit cuda_error(const std::string& what) : std::runtime_error("marginloss: " + what) {}
};

namespace cuda {
namespace detail {

inline std::string where(const char* file, int line) { return std::string(" (") + file + ":" + std::to_string(line) + ")"; }

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw cuda_error(std::string(call) + " failed: " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status) +
                   where(file, line));
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw cuda_error(std::string(call) + " failed: " + cublasGetStatusName(status) + ": " + cublasGetStatusString(status) +
                   where(file, line));
}

// After a kernel launch: a bad configuration or an earlier asynchronous fault, named by kernel.
inline void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return;
  throw cuda_error(std::string("launching ") + kernel + " failed: " + cudaGetErrorName(status) + ": " +
                   cudaGetErrorString(status) + where(file, line));
}

}  // namespace detail
}  // namespace cuda

MARGINLOSS_NAMESPACE_END

/// Evaluates a CUDA runtime call; on failure throws cuda_error naming the call, the status and
/// the file and line.
#define MARGINLOSS_CUDA_CHECK(call) ::marginloss::cuda::detail::check_cuda((call), #call, __FILE__, __LINE__)
/// Evaluates a cuBLAS call; on failure throws cuda_error as MARGINLOSS_CUDA_CHECK.
#define MARGINLOSS_CUBLAS_CHECK(call) ::marginloss::cuda::detail::check_cublas((call), #call, __FILE__, __LINE__)
/// After a kernel launch: throws cuda_error naming `kernel` when the launch (or an earlier
/// asynchronous operation) failed.
#define MARGINLOSS_CUDA_CHECK_LAUNCH(kernel) ::marginloss::cuda::detail::check_launch(kernel, __FILE__, __LINE__)
