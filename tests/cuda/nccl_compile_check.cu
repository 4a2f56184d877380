// Compile check of the NCCL path: ml::cuda::NcclCommunicator and the sharded entry points (the
// calls of cuda/loss.cuh with an ml::Shard: forward_backward, forward and backward, with
// cuda::Execution and cuda::Async) instantiated for every policy type of the CUDA tests' list (policies.hpp) but those with
// learnable margins (the sharded entry points take none), float and double, int32 labels for
// every other type and int64 for the rest, and both single-process communicators checked
// against the one concept (distributed/communicator.hpp). Not run: it needs one GPU per NCCL
// rank. The sharded engine itself is run by the CUDA tests with an in-process communicator
// (gpu_runner.cu).
#include "policies.hpp"

#include <marginloss/cuda/cuda.cuh>
#include <marginloss/cuda/nccl.cuh>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <variant>

namespace ml = marginloss;
namespace mc = marginloss::cuda;

// One concept: NCCL's and the single-GPU communicator are DeviceCommunicators (a refinement of
// Communicator); the CPU's single-process communicator is a Communicator without a stream.
static_assert(ml::is_device_communicator_v<mc::NcclCommunicator>);
static_assert(ml::is_device_communicator_v<mc::LocalCommunicator>);
static_assert(ml::is_local_communicator_v<mc::LocalCommunicator>);
static_assert(ml::is_communicator_v<ml::LocalCommunicator> && !ml::is_device_communicator_v<ml::LocalCommunicator>);

namespace {

template <typename P, typename L, typename Comm>
void sharded_calls(const P& policy, Comm& comm, cublasHandle_t cublas, mc::Workspace<typename P::value_type>& ws,
                   const mc::DeviceMatrix<const typename P::value_type>& X, const mc::DeviceMatrix<const typename P::value_type>& W,
                   const L* labels, const mc::DeviceMatrix<typename P::value_type>& dX,
                   const mc::DeviceMatrix<typename P::value_type>& dW) {
  using T = typename P::value_type;
  const auto range = ml::even_class_range(1000, comm.size(), comm.rank());
  const mc::Execution exec{comm.stream(), cublas};
  const mc::Async async{comm.stream(), cublas};
  const T loss = mc::forward_backward(policy, X, W, labels, {dX, dW}, ws, exec, ml::Shard{range, 1000, comm});
  const auto fwd = mc::forward(policy, X, W, labels, ws, exec, ml::Shard{range.offset, 1000, comm});
  mc::backward(fwd, T(2) * loss * fwd.loss(), {dX, dW});
  const T* d_loss = mc::forward_backward(policy, X, W, labels, mc::Gradients<T>{dX, dW}, ws, async,
                                         ml::Shard{range, 1000, comm}, mc::Options{});
  const auto fwd_async = mc::forward(policy, X, W, labels, ws, async, ml::Shard{range, 1000, comm});
  mc::backward(fwd_async, d_loss, {dX, dW});
  mc::check_errors(ws, comm.stream());
}

template <typename T, std::size_t... I>
void all_policies(mc::NcclCommunicator& comm, cublasHandle_t cublas, mc::Workspace<T>& ws, const mc::DeviceMatrix<const T>& X,
                  const mc::DeviceMatrix<const T>& W, const std::int32_t* l32, const std::int64_t* l64,
                  const mc::DeviceMatrix<T>& dX, const mc::DeviceMatrix<T>& dW, std::index_sequence<I...>) {
  const auto one = [&](auto index) {
    using P = std::variant_alternative_t<decltype(index)::value, mlcuda_test::AnyPolicy<T>>;
    if constexpr (!ml::detail::has_learnable_margins<P>::value) {
      if constexpr (decltype(index)::value % 2 == 0)
        sharded_calls(P{}, comm, cublas, ws, X, W, l32, dX, dW);
      else
        sharded_calls(P{}, comm, cublas, ws, X, W, l64, dX, dW);
    }
  };
  (one(std::integral_constant<std::size_t, I>{}), ...);
}

template <typename T>
void all_policies(mc::NcclCommunicator& comm, cublasHandle_t cublas, mc::Workspace<T>& ws, const mc::DeviceMatrix<const T>& X,
                  const mc::DeviceMatrix<const T>& W, const std::int32_t* l32, const std::int64_t* l64,
                  const mc::DeviceMatrix<T>& dX, const mc::DeviceMatrix<T>& dW) {
  all_policies(comm, cublas, ws, X, W, l32, l64, dX, dW,
               std::make_index_sequence<std::variant_size_v<mlcuda_test::AnyPolicy<T>>>{});
}

}  // namespace

// Referenced so that the instantiations are kept; never called.
void marginloss_nccl_compile_check(ncclComm_t nccl, cudaStream_t stream, cublasHandle_t cublas, void* memory,
                                   std::size_t bytes) {
  mc::NcclCommunicator comm(nccl, stream);
  mc::Workspace<float> wsf(memory, bytes);
  mc::Workspace<double> wsd(memory, bytes);
  all_policies<float>(comm, cublas, wsf, {}, {}, nullptr, nullptr, {}, {});
  all_policies<double>(comm, cublas, wsd, {}, {}, nullptr, nullptr, {}, {});
  ncclUniqueId id{};
  mc::NcclCommunicator owned = mc::NcclCommunicator::create(1, id, 0, stream);
  mc::NcclCommunicator moved = std::move(owned);
  double records[8] = {};
  try {
    moved.host_allreduce_sum(records, 8);
  } catch (const ml::communication_error&) {  // what a failing NCCL call throws
  }
  // The single-GPU communicator with the sharded entry points: the single-GPU loss.
  mc::LocalCommunicator local(stream);
  sharded_calls(ml::CosFace<float>{}, local, cublas, wsf, {}, {}, static_cast<const std::int32_t*>(nullptr), {}, {});
}
