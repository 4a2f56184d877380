// The bridge between the CUDA tests' two translation units: test_cuda.cpp (g++, doctest, the
// CPU reference through Eigen) and gpu_runner.cu (nvcc, the CUDA backend; no Eigen). Plain
// host vectors cross it; policy types are shared (they are Eigen-free).
#pragma once

#include <marginloss/value_slope.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace mlcuda_test {

using Index = marginloss::Index;

// A problem in host memory, row-major and contiguous: X (B x D), W (C x D), labels (B).
template <typename T>
struct Problem {
  Index B = 0, D = 0, C = 0;
  std::vector<T> X, W;
  std::vector<std::int64_t> labels;
};

struct RunOptions {
  Index class_block = 0;      // ml::cuda::Options::class_block (0: automatic)
  bool int64_labels = false;  // labels as int64_t (else int32_t)
  bool split = false;         // forward() then backward(grad_loss), instead of forward_backward()
  bool async = false;         // forward_async + backward_async (gradient in device memory) + check_errors
  double grad_loss = 1.0;     // the upstream gradient of split / async runs
  Index pad = 0;              // extra columns in every leading dimension (strided views)
};

template <typename T>
struct Result {
  T loss = T(0);
  std::vector<T> dX, dW;      // contiguous copies (padding removed)
  std::vector<T> dmargins;    // dL/dmargins (C entries) for policies with learnable margins
  bool guards_intact = true;  // the padding columns of dX and dW were not written
  Index class_block = 0;      // the workspace's block size
};

struct Error {
  bool thrown = false;
  bool invalid_argument = false;  // a marginloss::invalid_argument (else another std::exception)
  std::string message;
};

// cudaGetDeviceCount succeeded with at least one device; else `why` says what it returned.
bool cuda_device_available(std::string& why);

// The policy's per-class margins (AdaptiveMargin, ClassMargins) are read from the host memory
// its view points to and copied to the device, where a copy of the policy views them.
template <typename P>
Result<typename P::value_type> run_gpu(const P& policy, const Problem<typename P::value_type>& problem,
                                       const RunOptions& options);

// The class-sharded loss over `ranks` in-process ranks (one thread, stream and cuBLAS handle
// per rank, all-reduce through host memory in rank order), classes split by even_class_range.
// Returns one Result per rank: its loss and dX, and dW = the full C x D matrix assembled
// from the shards (the same in every element of the vector).
template <typename P>
std::vector<Result<typename P::value_type>> run_gpu_sharded(const P& policy, const Problem<typename P::value_type>& problem,
                                                            int ranks, Index class_block);

// CosFace<float> sharded over 2 in-process ranks (B = 4, D = 5, C = 8) where rank 1's W has a
// NaN in its row 0: each rank's exception message (empty if it threw none).
std::vector<std::string> run_gpu_sharded_bad_shard();

// Faults that need a device (the kernels find them, or a forward must run first).
enum class DeviceFault {
  label_too_large,        // labels[1] = C (int32)
  label_negative,         // labels[2] = -3 (int64)
  zero_x_row,             // X row 2 = 0
  nan_in_x,               // X(1, 3) = NaN
  bad_w_rows,             // W(4, 2) = NaN and W row 6 = 0: the first, row 4, is reported
  huge_x_row,             // X row 1 scaled to a norm of ~1e31 (float: out of range)
  async_label,            // forward_async with labels[0] = C: nothing thrown until check_errors()
  nan_grad_host,          // backward(grad_loss = NaN)
  nan_grad_device,        // backward_async with a NaN gradient in device memory, then check_errors()
  backward_twice,         // a second backward on one forward
  backward_other_w,       // backward with a W of another shape than the forward's
  dx_shape,               // backward with a dX of the wrong shape
  overflow,               // none: the policy as given is expected to overflow the loss
  unchecked_async,        // forward_async with labels[0] = C, unchecked, then a valid forward(): it reports the first
};

template <typename P>
Error run_gpu_error(const P& policy, const Problem<typename P::value_type>& problem, DeviceFault fault);

// forward_backward (synchronous) with `policy` modifiable: a policy with a state hook
// (CurricularFace's tau) is updated by the GPU engine; the updated state is copied back into
// `policy` (its margins view, if any, kept).
template <typename P>
Result<typename P::value_type> run_gpu_updating(P& policy, const Problem<typename P::value_type>& problem,
                                                Index class_block);

// A per-class policy (AdaptiveMargin, ClassMargins) whose device margins have `value` at class
// k, run synchronously (forward_backward) or asynchronously (forward_backward_async, then
// check_errors): the exception's message.
template <typename P>
Error run_gpu_class_value_error(const P& policy, const Problem<typename P::value_type>& problem, Index k,
                                typename P::value_type value, bool async);

// Argument errors the host finds before any CUDA call: these run without a GPU.
enum class HostFault {
  small_workspace,        // one byte less than workspace_bytes
  no_workspace,           // a default-constructed Workspace
  w_columns,              // W has D + 1 columns
  empty_batch,            // B = 0
  x_leading_dimension,    // ld < D
  null_labels,
  null_cublas,
  invalid_policy,         // CosFace with s = -1
  negative_block,         // Options::class_block = -1
  backward_first,         // backward() without forward()
  shard_outside,          // sharded: classes [3, 8) of 6
  margins_count,          // AdaptiveMargin viewing 5 margins for C = 6 (forward_backward with dmargins)
  margins_null,           // ClassMargins<CosFace> viewing null data with 6 entries
  state_const,            // a const CurricularFace (tau updated in forward): forward_backward
  state_async,            // a modifiable CurricularFace (tau updated in forward): forward_async
};

// The message of the exception the call throws (thrown = false if none). Float problems of
// B = 4, D = 5, C = 6.
Error host_error(HostFault fault);

template <typename T>
std::size_t workspace_bytes(Index batch, Index dim, Index classes, Index class_block, std::size_t memory_budget);
template <typename T>
std::size_t sharded_workspace_bytes(Index batch, Index dim, Index classes, Index class_block);

// ml::detail::NormRange<T>.
template <typename T>
double norm_limit_lo();
template <typename T>
double norm_limit_hi();

}  // namespace mlcuda_test
