// marginloss: an MPI communicator for the class-sharded loss (distributed/sharded.hpp). Opt-in:
// include this header (and link the marginloss::mpi CMake target) only in programs built with MPI.
#pragma once

#include <mpi.h>

#include <string>
#include <type_traits>

#include "../errors.hpp"
#include "communicator.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// The Communicator of the class-sharded loss over MPI (the concept: distributed/communicator.hpp):
/// in-place MPI_Allreduce on `comm`, bit-identical on every rank for a fixed process count and
/// implementation. An MPI call that returns an error throws marginloss::communication_error
/// naming the call and MPI's message -- as NCCL failures do on the GPU. MPI returns errors only
/// when `comm`'s error handler is MPI_ERRORS_RETURN (MPI_Comm_set_errhandler); under MPI's
/// default, MPI_ERRORS_ARE_FATAL, it aborts the job instead.
class MPICommunicator {
 public:
  /// Uses `comm` (not duplicated, not freed): rank and size are read once, here.
  explicit MPICommunicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  int rank() const { return rank_; }  ///< this process's rank in comm()
  int size() const { return size_; }  ///< the number of processes in comm()
  MPI_Comm comm() const { return comm_; }  ///< the communicator the reductions use

  /// data[0..n) <- the element-wise max over the ranks, in place; T = float or double. n may
  /// exceed INT_MAX (reduced in pieces of 2^30).
  template <typename T>
  void allreduce_max(T* data, Index n) {
    reduce(data, n, MPI_MAX, "MPI_Allreduce(MPI_MAX)");
  }
  /// data[0..n) <- the element-wise sum over the ranks, in place; T = float or double.
  template <typename T>
  void allreduce_sum(T* data, Index n) {
    reduce(data, n, MPI_SUM, "MPI_Allreduce(MPI_SUM)");
  }

 private:
  template <typename T>
  void reduce(T* data, Index n, MPI_Op op, const char* what) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "MPICommunicator reduces float or double");
    const MPI_Datatype type = std::is_same_v<T, float> ? MPI_FLOAT : MPI_DOUBLE;
    // MPI counts are int: reduce in pieces for very large buffers.
    constexpr Index piece = Index(1) << 30;
    for (Index k = 0; k < n; k += piece) {
      const int count = static_cast<int>(n - k < piece ? n - k : piece);
      check(MPI_Allreduce(MPI_IN_PLACE, data + k, count, type, op, comm_), what);
    }
  }
  static void check(int rc, const char* what) {
    if (rc != MPI_SUCCESS) {
      char msg[MPI_MAX_ERROR_STRING];
      int len = 0;
      MPI_Error_string(rc, msg, &len);
      throw communication_error(std::string(what) + " failed: " + std::string(msg, static_cast<std::size_t>(len)));
    }
  }

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

MARGINLOSS_NAMESPACE_END
