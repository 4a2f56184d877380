// The bridge between the CUDA tests' two translation units: test_cuda.cpp (g++, doctest, the
// CPU reference through Eigen) and gpu_runner.cu (nvcc, the CUDA backend; no Eigen). Plain
// host vectors cross it; policies cross as AnyPolicy<T> (policies.hpp: the one list of them).
// The faults the tests inject are in faults.hpp.
#pragma once

#include "policies.hpp"

#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace mlcuda_test {

// A problem in host memory, row-major and contiguous: X (B x D), W (C x D), labels (B).
template <typename T>
struct Problem {
  Index B = 0, D = 0, C = 0;
  std::vector<T> X, W;
  std::vector<std::int64_t> labels;
};

// Which calls a run makes (cuda/loss.cuh). With none of split, async, fused_async:
// forward_backward(..., Execution) (upstream gradient 1).
struct RunOptions {
  Index class_block = 0;      // ml::cuda::Options::class_block (0: automatic)
  bool int64_labels = false;  // labels as int64_t (else int32_t)
  bool split = false;         // forward(Execution) then backward(fwd, grad_loss), instead of forward_backward()
  bool device_grad = false;   // split: the upstream gradient as a device pointer (a synchronous backward)
  bool async = false;         // forward(Async), backward(fwd, gradient in device memory), check_errors(),
                              // the loss read from fwd.device_loss()
  bool fused_async = false;   // forward_backward(..., Async) (upstream gradient 1: set grad_loss = 1),
                              // check_errors(), the loss read from the returned device pointer
  bool local_shard = false;   // run_gpu: the calls with ml::Shard{0, C, cuda::LocalCommunicator(stream)} on a
                              // workspace of workspace_bytes (the single-GPU loss)
  bool disagree_classes = false;  // run_gpu_sharded: the last rank passes num_classes C + 1 (the ranks disagree)
  double grad_loss = 1.0;     // the upstream gradient of split / async runs
  Index pad = 0;              // extra columns in every leading dimension (strided views)
};

// What a call threw, if anything.
struct Error {
  bool thrown = false;
  bool invalid_argument = false;  // a marginloss::invalid_argument (else another std::exception)
  std::string message;
};

template <typename T>
struct Result {
  T loss = T(0);
  std::vector<T> dX, dW;      // contiguous copies (padding removed)
  std::vector<T> dmargins;    // dL/dmargins (C entries) for policies with learnable margins
  bool guards_intact = true;  // the padding columns of dX and dW were not written
  Index class_block = 0;      // the workspace's block size
  bool device_loss_ok = true; // split: fwd.device_loss() holds fwd.loss()'s bits; async: the Forward says
                              // asynchronous() and has a device loss
  Error error;                // run_gpu_sharded: what this rank threw (the other fields are then unset)
};

// cudaGetDeviceCount succeeded with at least one device; else `why` says what it returned.
bool cuda_device_available(std::string& why);

// The policy's per-class margins (AdaptiveMargin, ClassMargins) are read from the host memory
// its view points to and copied to the device, where a copy of the policy views them.
template <typename T>
Result<T> run_gpu(const AnyPolicy<T>& policy, const Problem<T>& problem, const RunOptions& options);

// The class-sharded loss over `ranks` in-process ranks (one thread, stream and cuBLAS handle
// per rank, all-reduce through host memory in rank order), classes split by even_class_range;
// options: class_block, int64_labels and the calls (split, device_grad, async, fused_async,
// grad_loss; not pad nor local_shard). Returns one Result per rank: its loss, dX and error,
// and dW = the full C x D matrix assembled from the shards (the same in every element of the
// vector). A policy with learnable margins (not supported by the sharded entry points) makes
// every rank's error a std::logic_error.
template <typename T>
std::vector<Result<T>> run_gpu_sharded(const AnyPolicy<T>& policy, const Problem<T>& problem, int ranks,
                                       const RunOptions& options);

// forward_backward (synchronous, int64 labels) with `policy` modifiable: a policy with a state
// hook (CurricularFace's tau) is updated by the GPU engine; the updated state is copied back
// into `policy` (its margins view, if any, kept).
template <typename T>
Result<T> run_gpu_updating(AnyPolicy<T>& policy, const Problem<T>& problem, Index class_block);
// The same on a policy of the list's type P.
template <typename P>
Result<typename P::value_type> run_gpu_updating(P& policy, const Problem<typename P::value_type>& problem,
                                                Index class_block) {
  using T = typename P::value_type;
  AnyPolicy<T> any = policy;
  Result<T> r = run_gpu_updating<T>(any, problem, class_block);
  policy = std::get<P>(any);
  return r;
}

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
