// marginloss::cuda: an NCCL communicator for the class-sharded GPU loss (cuda/sharded.cuh).
// Opt-in: needs nccl.h and libnccl (CMake: link marginloss::nccl, see cmake/MarginlossCuda.cmake).
//
//   ncclUniqueId id;  // rank 0: ncclGetUniqueId(&id), then broadcast it (MPI, a file, ...)
//   cudaSetDevice(local_gpu);
//   auto comm = ml::cuda::NcclCommunicator::create(ranks, id, rank, stream);   // owns the ncclComm_t
//   // or wrap one you manage: ml::cuda::NcclCommunicator comm(existing_comm, stream);
//   const auto range = ml::even_class_range(C, comm.size(), comm.rank());
//   float loss = ml::cuda::forward_backward(policy, X, W_shard, labels, {dX, dW_shard}, ws,
//                                           ml::cuda::Execution{comm.stream(), cublas}, ml::Shard{range, C, comm});
//
// A DeviceCommunicator (the concept: distributed/communicator.hpp). The collectives are in-place
// ncclAllReduce calls on the communicator's stream, the stream the sharded loss runs on. One GPU
// per rank (NCCL's rule). An NCCL call that fails throws marginloss::communication_error (as
// MPICommunicator does for MPI); a CUDA call that fails, marginloss::cuda_error.
#pragma once

#include <nccl.h>

#include <string>
#include <type_traits>
#include <utility>

#include "../errors.hpp"
#include "check.cuh"
#include "communicator.cuh"
#include "sharded.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

inline void check_nccl(ncclResult_t status, ncclComm_t comm, const char* call, const char* file, int line) {
  if (status == ncclSuccess || status == ncclInProgress) return;
  std::string what = std::string(call) + " failed: " + ncclGetErrorString(status);
  if (comm) {
    const char* last = ncclGetLastError(comm);
    if (last && *last) what += std::string(" (") + last + ")";
  }
  throw communication_error(what + where(file, line));
}

template <typename T>
constexpr ncclDataType_t nccl_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "marginloss::cuda: NCCL reductions of float or double");
  return std::is_same_v<T, float> ? ncclFloat32 : ncclFloat64;
}

}  // namespace detail

/// Evaluates an NCCL call; on failure (other than ncclInProgress) throws
/// marginloss::communication_error naming the call, NCCL's message and, when `comm` is not null,
/// its last error.
#define MARGINLOSS_NCCL_CHECK(comm, call) ::marginloss::cuda::detail::check_nccl((call), (comm), #call, __FILE__, __LINE__)

/// The DeviceCommunicator of the class-sharded GPU loss over NCCL: in-place ncclAllReduce on its
/// stream, bit-identical on every rank for a fixed communicator. One GPU per rank. Move-only;
/// an NCCL failure throws marginloss::communication_error naming the call and NCCL's last error,
/// a CUDA failure marginloss::cuda_error.
class NcclCommunicator {
 public:
  /// Wraps an initialised communicator, which stays the caller's (not destroyed here), and the
  /// stream every sharded call with this communicator runs on.
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream) : comm_(comm), stream_(stream) {
    if (!comm_) marginloss::detail::fail("NcclCommunicator: the ncclComm_t is null");
    MARGINLOSS_NCCL_CHECK(comm_, ncclCommCount(comm_, &size_));
    MARGINLOSS_NCCL_CHECK(comm_, ncclCommUserRank(comm_, &rank_));
    // The device buffer of host_allreduce_sum(), allocated once here for the records of a
    // sharded forward (8 doubles per rank; distributed/agreement.hpp), grown if ever needed.
    reserve_host_buffer(8 * static_cast<Index>(size_));
  }

  /// Creates and owns rank `rank` of `ranks` on the current device (ncclCommInitRank); it is
  /// destroyed with this object.
  static NcclCommunicator create(int ranks, const ncclUniqueId& id, int rank, cudaStream_t stream) {
    ncclComm_t comm = nullptr;
    MARGINLOSS_NCCL_CHECK(static_cast<ncclComm_t>(nullptr), ncclCommInitRank(&comm, ranks, id, rank));
    try {
      NcclCommunicator c(comm, stream);
      c.owns_ = true;
      return c;
    } catch (...) {
      ncclCommDestroy(comm);
      throw;
    }
  }

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  /// Takes over `other`'s communicator, stream and device buffer; `other` is left empty.
  NcclCommunicator(NcclCommunicator&& other) noexcept { swap(other); }
  /// Releases what this one holds, then takes over `other`'s.
  NcclCommunicator& operator=(NcclCommunicator&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }
  ~NcclCommunicator() { release(); }

  int rank() const { return rank_; }  ///< this rank (ncclCommUserRank)
  int size() const { return size_; }  ///< the number of ranks (ncclCommCount)
  cudaStream_t stream() const { return stream_; }  ///< the stream the collectives and the sharded calls run on
  ncclComm_t get() const { return comm_; }  ///< the NCCL communicator (owned only when made by create())

  /// device_data[0..n) <- the element-wise sum over the ranks: in place, on stream(), every
  /// rank; T = float or double.
  template <typename T>
  void allreduce_sum(T* device_data, Index n) {
    reduce(device_data, n, ncclSum);
  }
  /// device_data[0..n) <- the element-wise max over the ranks, as allreduce_sum().
  template <typename T>
  void allreduce_max(T* device_data, Index n) {
    reduce(device_data, n, ncclMax);
  }

  /// host_data[0..n) <- the element-wise sum over the ranks, in HOST memory, done when it returns
  /// (waits for the stream): how the ranks agree on errors before any collective of the loss.
  void host_allreduce_sum(double* host_data, Index n) {
    if (n <= 0) return;
    reserve_host_buffer(n);
    const std::size_t bytes = sizeof(double) * static_cast<std::size_t>(n);
    MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(buffer_, host_data, bytes, cudaMemcpyHostToDevice, stream_));
    reduce(buffer_, n, ncclSum);
    MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(host_data, buffer_, bytes, cudaMemcpyDeviceToHost, stream_));
    MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  NcclCommunicator() = default;

  void reserve_host_buffer(Index n) {
    if (n <= capacity_) return;
    // The old buffer may still be read by work enqueued on the stream.
    if (buffer_) {
      MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      MARGINLOSS_CUDA_CHECK(cudaFree(buffer_));
      buffer_ = nullptr;
      capacity_ = 0;
    }
    MARGINLOSS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&buffer_), sizeof(double) * static_cast<std::size_t>(n)));
    capacity_ = n;
  }

  template <typename T>
  void reduce(T* data, Index n, ncclRedOp_t op) {
    if (n <= 0) return;
    MARGINLOSS_NCCL_CHECK(comm_, ncclAllReduce(data, data, static_cast<std::size_t>(n), detail::nccl_type<T>(), op,
                                               comm_, stream_));
  }

  void swap(NcclCommunicator& other) noexcept {
    std::swap(comm_, other.comm_);
    std::swap(stream_, other.stream_);
    std::swap(owns_, other.owns_);
    std::swap(buffer_, other.buffer_);
    std::swap(capacity_, other.capacity_);
    std::swap(rank_, other.rank_);
    std::swap(size_, other.size_);
  }

  void release() noexcept {
    if (buffer_) (void)cudaFree(buffer_);
    if (owns_ && comm_) (void)ncclCommDestroy(comm_);
    buffer_ = nullptr;
    capacity_ = 0;
    comm_ = nullptr;
    owns_ = false;
  }

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool owns_ = false;
  double* buffer_ = nullptr;  // host_allreduce_sum's device copy
  Index capacity_ = 0;        // its size in doubles
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace cuda
MARGINLOSS_NAMESPACE_END
