// marginloss: the argument that makes a call one rank's part of the class-sharded loss
// (model parallelism over classes; docs/formulas.md §7), on either backend.
//
//   ml::Shard shard{offset, C, comm};      // this rank's rows are global classes [offset, offset + W_shard.rows())
//   auto loss = ml::forward_backward(policy, X, W_shard, labels, {dX, dW_shard}, ws, shard);
#pragma once

#include "../config.hpp"
#include "class_range.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// This rank's place in the class-sharded loss: its rows of W are the global classes
/// [offset, offset + W_shard.rows()) of num_classes, and `comm` joins the ranks (a Communicator
/// on the CPU, a DeviceCommunicator on CUDA: distributed/communicator.hpp). Labels stay global.
/// Holds a reference to comm: keep the communicator alive for the forward and its backward.
template <typename Comm>
struct Shard {
  Index offset;       ///< global index of this rank's first class
  Index num_classes;  ///< C, all classes of every rank
  Comm& comm;         ///< the ranks' communicator

  /// From this rank's first class and the number of all classes.
  Shard(Index offset_, Index num_classes_, Comm& comm_) : offset(offset_), num_classes(num_classes_), comm(comm_) {}
  /// From this rank's range of classes (e.g. ml::even_class_range(C, ranks, rank)).
  Shard(const ClassRange& range, Index num_classes_, Comm& comm_)
      : offset(range.offset), num_classes(num_classes_), comm(comm_) {}
};

MARGINLOSS_NAMESPACE_END
