// Compile check of the NCCL path: ml::cuda::NcclCommunicator and the sharded entry points
// instantiated for every GPU policy, float and double, int32 and int64 labels. Not run: it
// needs one GPU per NCCL rank. The sharded engine itself is run by the CUDA tests with an
// in-process communicator (gpu_runner.cu).
#include <marginloss/cuda/cuda.cuh>
#include <marginloss/cuda/nccl.cuh>

#include <cstdint>

namespace ml = marginloss;
namespace mc = marginloss::cuda;

namespace {

template <typename P, typename L>
void sharded_calls(const P& policy, mc::NcclCommunicator& comm, cublasHandle_t cublas, mc::Workspace<typename P::value_type>& ws,
                   const mc::DeviceMatrix<const typename P::value_type>& X, const mc::DeviceMatrix<const typename P::value_type>& W,
                   const L* labels, const mc::DeviceMatrix<typename P::value_type>& dX,
                   const mc::DeviceMatrix<typename P::value_type>& dW) {
  const auto range = ml::even_class_range(1000, comm.size(), comm.rank());
  (void)mc::sharded_forward_backward(policy, X, W, range.offset, 1000, labels, comm, dX, dW, ws, cublas);
  (void)mc::sharded_forward(policy, X, W, range.offset, 1000, labels, comm, ws, cublas);
  mc::sharded_backward(policy, W, comm, ws, typename P::value_type(2), dX, dW, cublas);
}

template <typename T>
void all_policies(mc::NcclCommunicator& comm, cublasHandle_t cublas, mc::Workspace<T>& ws, const mc::DeviceMatrix<const T>& X,
                  const mc::DeviceMatrix<const T>& W, const std::int32_t* l32, const std::int64_t* l64,
                  const mc::DeviceMatrix<T>& dX, const mc::DeviceMatrix<T>& dW) {
  sharded_calls(ml::NormFace<T>{}, comm, cublas, ws, X, W, l32, dX, dW);
  sharded_calls(ml::CosFace<T>{}, comm, cublas, ws, X, W, l64, dX, dW);
  sharded_calls(ml::ArcFace<T>{}, comm, cublas, ws, X, W, l32, dX, dW);
  sharded_calls(ml::CombinedMargin<T>{}, comm, cublas, ws, X, W, l64, dX, dW);
  sharded_calls(ml::SphereFace<T>{}, comm, cublas, ws, X, W, l32, dX, dW);
  sharded_calls(ml::SVSoftmax<T>{}, comm, cublas, ws, X, W, l64, dX, dW);
  sharded_calls(ml::MVSoftmax<T>{}, comm, cublas, ws, X, W, l32, dX, dW);
  sharded_calls(ml::CurricularFace<T>{}, comm, cublas, ws, X, W, l64, dX, dW);
  sharded_calls(ml::AMMSoftmax<T>{}, comm, cublas, ws, X, W, l32, dX, dW);
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
  (void)moved.count_failures(false);
}
