// marginloss: the Communicator concept of the class-sharded loss, and its single-process model.
//
// A communicator provides, for T = float and double (and double for error agreement):
//   int rank() const;  int size() const;
//   template <typename T> void allreduce_max(T* data, Index n);   // in place, every rank
//   template <typename T> void allreduce_sum(T* data, Index n);   // in place, every rank
// and every rank must obtain bit-identical results (MPI_Allreduce does for a fixed process
// count and implementation). The sharded loss calls them with n = B (row statistics) and
// n = B x D (the partial dX), in the same order on every rank.
#pragma once

#include "../config.hpp"
#include "../types.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// One process owning every class: the reductions are the identity. The communicator the
/// non-sharded entry points use.
struct LocalCommunicator {
  int rank() const { return 0; }  ///< always 0
  int size() const { return 1; }  ///< always 1
  /// Nothing to do: the max over one rank is the value itself.
  template <typename T>
  void allreduce_max(T*, Index) {}
  /// Nothing to do: the sum over one rank is the value itself.
  template <typename T>
  void allreduce_sum(T*, Index) {}
};

MARGINLOSS_NAMESPACE_END
