// marginloss: the class-sharded loss (model parallelism over classes; docs/formulas.md §7): the
// entry points of loss.hpp with a Shard argument (distributed/shard.hpp).
//
// Each rank owns a contiguous slice of the classes -- the rows W_shard of the full weight
// matrix, global classes [class_offset, class_offset + W_shard.rows()) of num_classes -- and
// sees the whole batch X with global labels. The ranks exchange only per-row statistics
// (target cosine, max, sum: 3 all-reduces of B values) and the partial dX (one all-reduce of
// B x D). The loss and dX come out identical on every rank; dW_shard is the gradient of this
// rank's rows. Within a rank, Options::class_block chunks the slice as in the local loss.
//
//   ml::MPICommunicator comm;                        // #include <marginloss/distributed/mpi.hpp>
//   const auto range = ml::even_class_range(C, comm.size(), comm.rank());
//   T loss = ml::forward_backward(policy, X, W_shard, labels, {dX, dW_shard}, ws, ml::Shard{range, C, comm});
//   // or, split: auto fwd = ml::forward(policy, X, W_shard, labels, ws, ml::Shard{range, C, comm});
//   //            ml::backward(fwd, grad_loss, {dX, dW_shard});
//
// `comm` is a Communicator (the concept, for this and the CUDA backend:
// distributed/communicator.hpp): ml::MPICommunicator, ml::LocalCommunicator (one process) or a
// type of your own. Every rank must call with the same policy, X, labels and options, in the
// same order. Errors: a bad argument on one rank, or ranks that disagree on B, D, C, the policy
// or the shard ranges, make every rank throw marginloss::invalid_argument before any data moves
// (distributed/agreement.hpp); a failing collective throws marginloss::communication_error.
#pragma once

#include "../loss.hpp"
#include "class_range.hpp"
#include "communicator.hpp"
#include "shard.hpp"
