// marginloss::cuda: the class-sharded loss on GPUs (model parallelism over classes;
// docs/formulas.md §7), with the semantics of distributed/sharded.hpp: each rank holds the
// rows W_shard of global classes [class_offset, class_offset + W_shard.rows) of num_classes
// (e.g. ml::even_class_range(C, ranks, rank)) and the whole batch X with global labels. Per
// call the ranks all-reduce 3 x B row statistics, B x D for dX (and B for a feature-norm
// scale). Loss and dX are identical on every rank; dW_shard is the gradient of this rank's rows.
//
//   ml::cuda::NcclCommunicator comm(nccl_comm, stream);         // cuda/nccl.cuh (NCCL), or your own
//   ml::cuda::Workspace<float> ws(mem, ml::cuda::sharded_workspace_bytes<float>(B, D, shard.count));
//   float loss = ml::cuda::sharded_forward_backward(policy, X, W_shard, shard.offset, C, labels,
//                                                  comm, dX, dW_shard, ws, cublas);
//
// `comm` is a DeviceCommunicator: the Communicator concept of the CPU's sharded loss refined
// with a stream and device memory (stated once in distributed/communicator.hpp). Models:
// cuda::NcclCommunicator (cuda/nccl.cuh) and cuda::LocalCommunicator (one GPU;
// cuda/communicator.cuh). Every rank must call with the same policy, X, labels and options, in
// the same order; all the work runs on comm.stream().
//
// Errors, as on the CPU: an argument rejected on the host by one rank, or ranks that disagree on
// B, D, C, the policy or the shard ranges, make every rank throw marginloss::invalid_argument
// before any collective (one host_allreduce_sum; distributed/agreement.hpp); input rejected on
// the device (labels, rows) is all-reduced with the loss, and every rank throws after the
// forward's collectives ("another rank rejected its input"). A failing collective throws
// marginloss::communication_error; a failing CUDA or cuBLAS call marginloss::cuda_error.
#pragma once

#include "../distributed/class_range.hpp"
#include "communicator.cuh"
#include "detail/engine.cuh"
#include "loss.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {

/// The forward of the class-sharded loss on this rank's rows W_shard (global classes
/// [class_offset, class_offset + W_shard.rows) of num_classes), on comm.stream(); returns the
/// loss, the same on every rank (waits for the stream).
template <typename PP, typename L, typename Comm>
value_t<PP> sharded_forward(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W_shard,
                           Index class_offset, Index num_classes, const L* labels, Comm& comm, Workspace<value_t<PP>>& ws,
                           cublasHandle_t cublas, const Options& options = {}) {
  detail::check_device_communicator<Comm>();
  detail::Engine::forward(std::forward<PP>(policy), X, W_shard, class_offset, num_classes, labels, comm, cublas, options, ws,
                          static_cast<value_t<PP>*>(nullptr), true);
  return detail::Engine::check(ws, comm.stream()).loss;
}

/// dX (B x D, the same on every rank) and dW_shard (this rank's rows), scaled by grad_loss
/// (waits for the stream).
template <typename P, typename Comm>
void sharded_backward(const P& policy, DeviceMatrix<const value_t<P>> W_shard, Comm& comm, Workspace<value_t<P>>& ws,
                      value_t<P> grad_loss, DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW_shard,
                      cublasHandle_t cublas) {
  static_assert(!detail::learnable_v<P>, "marginloss::cuda: learnable margins are not supported by the sharded entry points (as on the CPU)");
  detail::check_device_communicator<Comm>();
  detail::Engine::backward(policy, W_shard, comm, ws, grad_loss, static_cast<const value_t<P>*>(nullptr), dX, dW_shard,
                           cublas);
  detail::Engine::check(ws, comm.stream());
}

/// Forward and backward with upstream gradient 1: writes dX and dW_shard, returns the loss.
template <typename PP, typename L, typename Comm>
value_t<PP> sharded_forward_backward(PP&& policy, DeviceMatrix<const value_t<PP>> X,
                                    DeviceMatrix<const value_t<PP>> W_shard, Index class_offset, Index num_classes,
                                    const L* labels, Comm& comm, DeviceMatrix<value_t<PP>> dX,
                                    DeviceMatrix<value_t<PP>> dW_shard, Workspace<value_t<PP>>& ws, cublasHandle_t cublas,
                                    const Options& options = {}) {
  static_assert(!detail::learnable_v<std::decay_t<PP>>, "marginloss::cuda: learnable margins are not supported by the sharded entry points (as on the CPU)");
  detail::check_device_communicator<Comm>();
  detail::Engine::forward(std::forward<PP>(policy), X, W_shard, class_offset, num_classes, labels, comm, cublas, options, ws,
                          static_cast<value_t<PP>*>(nullptr), true);
  detail::Engine::backward(static_cast<const std::decay_t<PP>&>(policy), W_shard, comm, ws, value_t<PP>(1), static_cast<const value_t<PP>*>(nullptr), dX,
                           dW_shard, cublas);
  return detail::Engine::check(ws, comm.stream()).loss;
}

}  // namespace cuda
MARGINLOSS_NAMESPACE_END
