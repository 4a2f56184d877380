// marginloss::cuda: the class-sharded loss on GPUs (model parallelism over classes;
// docs/formulas.md §7): cuda/loss.cuh's entry points with a Shard argument, with the semantics of distributed/sharded.hpp: each rank holds the
// rows W_shard of global classes [class_offset, class_offset + W_shard.rows) of num_classes
// (e.g. ml::even_class_range(C, ranks, rank)) and the whole batch X with global labels. Per
// call the ranks all-reduce 3 x B row statistics, B x D for dX (and B for a feature-norm
// scale). Loss and dX are identical on every rank; dW_shard is the gradient of this rank's rows.
//
//   ml::cuda::NcclCommunicator comm(nccl_comm, stream);         // cuda/nccl.cuh (NCCL), or your own
//   const auto range = ml::even_class_range(C, comm.size(), comm.rank());
//   ml::cuda::Workspace<float> ws(mem, ml::cuda::sharded_workspace_bytes<float>(B, D, range.count));
//   float loss = ml::cuda::forward_backward(policy, X, W_shard, labels, {dX, dW_shard}, ws,
//                                           ml::cuda::Execution{comm.stream(), cublas}, ml::Shard{range, C, comm});
//
// `comm` is a DeviceCommunicator: the Communicator concept of the CPU's sharded loss refined
// with a stream and device memory (stated once in distributed/communicator.hpp). Models:
// cuda::NcclCommunicator (cuda/nccl.cuh) and cuda::LocalCommunicator (one GPU;
// cuda/communicator.cuh). Every rank must call with the same policy, X, labels and options, in
// the same order; all the work runs on comm.stream(), which must be the Execution's (Async's)
// stream (else marginloss::invalid_argument). With cuda::LocalCommunicator (offset 0, all C
// classes) the call is the single-GPU loss: workspace_bytes() suffices.
//
// Errors, as on the CPU: an argument rejected on the host by one rank, or ranks that disagree on
// B, D, C, the policy or the shard ranges, make every rank throw marginloss::invalid_argument
// before any collective (one host_allreduce_sum; distributed/agreement.hpp); input rejected on
// the device (labels, rows) is all-reduced with the loss, and every rank throws after the
// forward's collectives ("another rank rejected its input"). A failing collective throws
// marginloss::communication_error; a failing CUDA or cuBLAS call marginloss::cuda_error.
#pragma once

#include "../distributed/class_range.hpp"
#include "../distributed/shard.hpp"
#include "communicator.cuh"
#include "loss.cuh"
