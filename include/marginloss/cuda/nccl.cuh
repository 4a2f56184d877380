// marginloss::cuda: an NCCL communicator for the class-sharded GPU loss (cuda/sharded.cuh).
// Opt-in: needs nccl.h and libnccl (CMake: link marginloss::nccl, see cmake/MarginlossCuda.cmake).
//
//   ncclUniqueId id;  // rank 0: ncclGetUniqueId(&id), then broadcast it (MPI, a file, ...)
//   cudaSetDevice(local_gpu);
//   auto comm = ml::cuda::NcclCommunicator::create(ranks, id, rank, stream);   // owns the ncclComm_t
//   // or wrap one you manage: ml::cuda::NcclCommunicator comm(existing_comm, stream);
//   const auto shard = ml::even_class_range(C, comm.size(), comm.rank());
//   float loss = ml::cuda::sharded_forward_backward(policy, X, W_shard, shard.offset, C, labels, comm,
//                                                  dX, dW_shard, ws, cublas);
//
// The collectives are in-place ncclAllReduce calls on the communicator's stream, the stream the
// sharded loss runs on. One GPU per rank (NCCL's rule).
#pragma once

#include <nccl.h>

#include <string>
#include <type_traits>
#include <utility>

#include "check.cuh"
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
  throw cuda_error(what + where(file, line));
}

template <typename T>
constexpr ncclDataType_t nccl_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "marginloss::cuda: NCCL reductions of float or double");
  return std::is_same_v<T, float> ? ncclFloat32 : ncclFloat64;
}

}  // namespace detail

/// Evaluates an NCCL call; on failure (other than ncclInProgress) throws cuda_error naming the
/// call, NCCL's message and, when `comm` is not null, its last error.
#define MARGINLOSS_NCCL_CHECK(comm, call) ::marginloss::cuda::detail::check_nccl((call), (comm), #call, __FILE__, __LINE__)

/// The communicator of the class-sharded GPU loss over NCCL: in-place ncclAllReduce on its
/// stream, bit-identical on every rank for a fixed communicator. One GPU per rank. Move-only;
/// failures throw cuda_error naming the call and NCCL's last error.
class NcclCommunicator {
 public:
  /// Wraps an initialised communicator, which stays the caller's (not destroyed here), and the
  /// stream every sharded call with this communicator runs on.
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream) : comm_(comm), stream_(stream) {
    if (!comm_) marginloss::detail::fail("NcclCommunicator: the ncclComm_t is null");
    MARGINLOSS_NCCL_CHECK(comm_, ncclCommCount(comm_, &size_));
    MARGINLOSS_NCCL_CHECK(comm_, ncclCommUserRank(comm_, &rank_));
    // The one device double of count_failures(), allocated once here (not per call).
    MARGINLOSS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&flag_), sizeof(double)));
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
  /// Takes over `other`'s communicator, stream and device flag; `other` is left empty.
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

  /// The number of ranks that passed `true` (waits for the stream): how every rank learns that
  /// one rejected its arguments before any collective of the loss.
  double count_failures(bool this_rank_failed) {
    double v = this_rank_failed ? 1.0 : 0.0;
    MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(flag_, &v, sizeof(double), cudaMemcpyHostToDevice, stream_));
    reduce(flag_, 1, ncclSum);
    MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(&v, flag_, sizeof(double), cudaMemcpyDeviceToHost, stream_));
    MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return v;
  }

 private:
  NcclCommunicator() = default;

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
    std::swap(flag_, other.flag_);
    std::swap(rank_, other.rank_);
    std::swap(size_, other.size_);
  }

  void release() noexcept {
    if (flag_) (void)cudaFree(flag_);
    if (owns_ && comm_) (void)ncclCommDestroy(comm_);
    flag_ = nullptr;
    comm_ = nullptr;
    owns_ = false;
  }

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool owns_ = false;
  double* flag_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace cuda
MARGINLOSS_NAMESPACE_END
