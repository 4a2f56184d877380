// marginloss::cuda: the single-GPU communicator. The concept, and its DeviceCommunicator
// refinement that the CUDA entry points take, are stated once in distributed/communicator.hpp.
#pragma once

#include <cuda_runtime_api.h>

#include "../distributed/communicator.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {

/// One GPU owning every class: marginloss::LocalCommunicator (rank 0 of 1, the reductions are
/// the identity) plus the stream that makes it a DeviceCommunicator. A refinement rather than
/// the same type because the stream is a CUDA type, which the CPU headers never name. The
/// single-GPU entry points (cuda/loss.cuh) use one on their `stream`; passed to the sharded
/// entry points (cuda/sharded.cuh) it gives the single-GPU loss.
struct LocalCommunicator : marginloss::LocalCommunicator {
  /// Every call with this communicator runs on `stream` (the default stream when omitted).
  explicit LocalCommunicator(cudaStream_t stream = nullptr) : stream_(stream) {}
  cudaStream_t stream() const { return stream_; }  ///< the stream the calls run on

 private:
  cudaStream_t stream_;
};

}  // namespace cuda
MARGINLOSS_NAMESPACE_END
