// marginloss: the Communicator concept of the class-sharded loss -- stated once here for both
// backends -- and its single-process model.
//
// Communicator (the CPU entry points, distributed/sharded.hpp; every model below):
//   int rank() const;                                         // this rank, in [0, size())
//   int size() const;                                         // the number of ranks, >= 1
//   template <typename T> void allreduce_max(T* data, Index n);
//   template <typename T> void allreduce_sum(T* data, Index n);
//     data[0..n) <- the element-wise max / sum over the ranks, in place, for T = float and
//     double; every rank calls with the same n, and every rank must obtain bit-identical results
//     (MPI_Allreduce and ncclAllReduce do for a fixed process count and implementation).
//     Non-template overloads for float* and double* serve as well.
//   void host_allreduce_sum(double* host_data, Index n);      // optional for a Communicator
//     host_data[0..n) <- the element-wise sum over the ranks, in place, in host memory, complete
//     when it returns. How the ranks agree on errors (below); n is small (at most 8 x size()).
//     When absent it is allreduce_sum<double>, whose data is host memory for a Communicator.
//
// DeviceCommunicator (the CUDA entry points, cuda/sharded.cuh) refines Communicator; only the
// memory and the ordering change:
//   cudaStream_t stream() const;        // the stream the collectives and the sharded call run on
//   allreduce_max / allreduce_sum       take DEVICE pointers and are enqueued on stream()
//                                       (they need not be complete when they return);
//   host_allreduce_sum                  required (allreduce_sum cannot read host memory), and
//                                       host-synchronising: done when it returns.
//   Models: cuda::NcclCommunicator (cuda/nccl.cuh), cuda::LocalCommunicator (cuda/communicator.cuh).
//
// Ordering: the sharded loss issues its collectives in the same order on every rank, so every
// rank must call each entry point with the same policy, batch and options, in the same order.
//
// Errors -- one story for both backends (distributed/agreement.hpp implements it):
//   * An invalid argument throws marginloss::invalid_argument on EVERY rank, before any
//     collective that moves data: each rank checks its own arguments, then the ranks exchange
//     one small record with host_allreduce_sum (failed?, B, D, C, policy fingerprint, shard
//     range: the forward) or one flag (the backward). The rank that was wrong throws its own
//     message; the others throw "another rank rejected its input" or name the disagreement
//     ("the ranks disagree on B", "the shards overlap", ...). The ranks stay in step: the next
//     call can proceed. Input found bad on a GPU (labels, rows) is all-reduced with the loss
//     and thrown on every rank the same way.
//   * A failing collective (MPI or NCCL returns an error) throws marginloss::communication_error
//     (errors.hpp) on the rank that saw it. That one is not agreed on; see communication_error.
//   A communicator of your own should do the same: throw communication_error for a failure of
//   its transport, never invalid_argument.
#pragma once

#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// One process owning every class: the reductions are the identity. A Communicator (and, with a
/// stream, cuda::LocalCommunicator: a DeviceCommunicator); the non-sharded entry points use it.
struct LocalCommunicator {
  int rank() const { return 0; }  ///< always 0
  int size() const { return 1; }  ///< always 1
  /// Nothing to do: the max over one rank is the value itself.
  template <typename T>
  void allreduce_max(T*, Index) {}
  /// Nothing to do: the sum over one rank is the value itself.
  template <typename T>
  void allreduce_sum(T*, Index) {}
  /// Nothing to do: the sum over one rank is the value itself.
  void host_allreduce_sum(double*, Index) {}
};

namespace detail {

template <typename C, typename = void>
struct has_rank_and_size : std::false_type {};
template <typename C>
struct has_rank_and_size<C, std::void_t<decltype(std::declval<const C&>().rank()), decltype(std::declval<const C&>().size())>>
    : std::bool_constant<std::is_convertible_v<decltype(std::declval<const C&>().rank()), int> &&
                         std::is_convertible_v<decltype(std::declval<const C&>().size()), int>> {};

template <typename C, typename T, typename = void>
struct has_allreduces : std::false_type {};
template <typename C, typename T>
struct has_allreduces<C, T,
                      std::void_t<decltype(std::declval<C&>().allreduce_max(std::declval<T*>(), Index{})),
                                  decltype(std::declval<C&>().allreduce_sum(std::declval<T*>(), Index{}))>>
    : std::true_type {};

template <typename C, typename = void>
struct has_host_allreduce_sum : std::false_type {};
template <typename C>
struct has_host_allreduce_sum<C, std::void_t<decltype(std::declval<C&>().host_allreduce_sum(std::declval<double*>(), Index{}))>>
    : std::true_type {};

template <typename C, typename = void>
struct has_stream : std::false_type {};
template <typename C>
struct has_stream<C, std::void_t<decltype(std::declval<const C&>().stream())>> : std::true_type {};

}  // namespace detail

/// True when C has the members of a Communicator (rank, size, allreduce_max and allreduce_sum
/// for float and double); the sharded entry points check it with a readable message.
template <typename C>
inline constexpr bool is_communicator_v = detail::has_rank_and_size<C>::value && detail::has_allreduces<C, float>::value &&
                                          detail::has_allreduces<C, double>::value;

/// True when C is a DeviceCommunicator: a Communicator with stream() and host_allreduce_sum().
template <typename C>
inline constexpr bool is_device_communicator_v =
    is_communicator_v<C> && detail::has_stream<C>::value && detail::has_host_allreduce_sum<C>::value;

/// True for the single-process communicators (LocalCommunicator and types derived from it, such
/// as cuda::LocalCommunicator): the engines skip every collective and buffer of the sharded path.
template <typename C>
inline constexpr bool is_local_communicator_v = std::is_base_of_v<LocalCommunicator, C>;

namespace detail {

// The one host-side exchange of error agreement: comm.host_allreduce_sum when the communicator
// has it, else its allreduce_sum (a Communicator's data is host memory). A communicator with a
// stream() reduces device memory, so it must provide host_allreduce_sum.
template <typename Comm>
inline void host_allreduce_sum(Comm& comm, double* host_data, Index n) {
  if constexpr (has_host_allreduce_sum<Comm>::value) {
    comm.host_allreduce_sum(host_data, n);
  } else {
    static_assert(!has_stream<Comm>::value,
                  "marginloss: a DeviceCommunicator (it has stream()) must provide void host_allreduce_sum(double* "
                  "host_data, Index n): its allreduce_sum takes device memory (distributed/communicator.hpp)");
    comm.allreduce_sum(host_data, n);
  }
}

}  // namespace detail

MARGINLOSS_NAMESPACE_END
