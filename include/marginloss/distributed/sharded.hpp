// marginloss: the class-sharded loss (model parallelism over classes; docs/formulas.md §7).
//
// Each rank owns a contiguous slice of the classes -- the rows W_shard of the full weight
// matrix, global classes [class_offset, class_offset + W_shard.rows()) of num_classes -- and
// sees the whole batch X with global labels. The ranks exchange only per-row statistics
// (target cosine, max, sum: 3 all-reduces of B values) and the partial dX (one all-reduce of
// B x D). The loss and dX come out identical on every rank; dW_shard is the gradient of this
// rank's rows. Within a rank, Options::class_block chunks the slice as in the local loss.
//
//   ml::MPICommunicator comm;                        // #include <marginloss/distributed/mpi.hpp>
//   T loss = ml::sharded_forward_backward(policy, X, W_shard, offset, C, labels, comm, dX, dW_shard, ws);
//
// `comm` is a Communicator (the concept, for this and the CUDA backend:
// distributed/communicator.hpp): ml::MPICommunicator, ml::LocalCommunicator (one process) or a
// type of your own. Every rank must call with the same policy, X, labels and options, in the
// same order. Errors: a bad argument on one rank, or ranks that disagree on B, D, C, the policy
// or the shard ranges, make every rank throw marginloss::invalid_argument before any data moves
// (distributed/agreement.hpp); a failing collective throws marginloss::communication_error.
#pragma once

#include <type_traits>
#include <utility>

#include "../loss.hpp"
#include "class_range.hpp"
#include "communicator.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// The CPU entry points reduce host memory: a Communicator, not a DeviceCommunicator.
template <typename Comm>
constexpr void check_host_communicator() {
  static_assert(is_communicator_v<Comm>,
                "marginloss: the communicator must be a Communicator: int rank() const, int size() const, "
                "allreduce_max and allreduce_sum of (T* data, Index n) for T = float and double "
                "(distributed/communicator.hpp)");
  static_assert(is_local_communicator_v<Comm> || !has_stream<Comm>::value,
                "marginloss: this communicator has stream(), a DeviceCommunicator whose all-reduces take device "
                "memory: use marginloss::cuda::sharded_* (cuda/sharded.cuh), or a Communicator of host memory here");
}

}  // namespace detail

/// The forward of the class-sharded loss on this rank's rows W_shard (global classes
/// [class_offset, class_offset + W_shard.rows()) of num_classes), with the whole batch X and
/// global labels. Returns the loss, the same on every rank; leaves in `ws` what
/// sharded_backward() needs.
template <typename PP, typename DX, typename DW, typename L, typename Comm, typename U>
detail::policy_value_t<PP> sharded_forward(PP&& policy, const Eigen::MatrixBase<DX>& X,
                                           const Eigen::MatrixBase<DW>& W_shard, Index class_offset, Index num_classes,
                                           const L& labels, Comm& comm, Workspace<U>& ws, const Options& options = {}) {
  detail::check_host_communicator<Comm>();
  using T = detail::policy_value_t<PP>;
  detail::check_row_major_matrix<DX, T>();
  detail::check_row_major_matrix<DW, T>();
  detail::check_workspace_scalar<U, T>();
  return detail::Engine::forward(std::forward<PP>(policy), Eigen::Ref<const RowMatrix<T>>(X.derived()),
                                 Eigen::Ref<const RowMatrix<T>>(W_shard.derived()), class_offset, num_classes,
                                 detail::label_argument<L>::view(labels), comm,
                                 detail::resolve_class_block<T>(options, X.rows(), W_shard.rows(), detail::kCpuBlockBytes), ws);
}

/// Writes dX (B x D, the same on every rank; one all-reduce) and dW_shard (this rank's rows),
/// scaled by the upstream gradient grad_loss. Not for learnable margins.
template <typename P, typename DW, typename Comm, typename U, typename DXo, typename DWo>
void sharded_backward(const P& policy, const Eigen::MatrixBase<DW>& W_shard, Comm& comm, Workspace<U>& ws,
                      typename P::value_type grad_loss, DXo&& dX, DWo&& dW_shard) {
  detail::check_host_communicator<Comm>();
  using T = typename P::value_type;
  static_assert(!detail::has_learnable_margins<P>::value, MARGINLOSS_LEARNABLE_MARGINS_NEED_DMARGINS);
  detail::check_row_major_matrix<DW, T>();
  detail::check_workspace_scalar<U, T>();
  detail::check_output_matrix<DXo, T>();
  detail::check_output_matrix<DWo, T>();
  detail::Engine::backward(policy, Eigen::Ref<const RowMatrix<T>>(W_shard.derived()), comm, ws, grad_loss,
                           Eigen::Ref<RowMatrix<T>>(dX), Eigen::Ref<RowMatrix<T>>(dW_shard));
}

/// sharded_forward() then sharded_backward() with grad_loss = 1; returns the loss.
template <typename PP, typename DX, typename DW, typename L, typename Comm, typename DXo, typename DWo, typename U>
detail::policy_value_t<PP> sharded_forward_backward(PP&& policy, const Eigen::MatrixBase<DX>& X,
                                                    const Eigen::MatrixBase<DW>& W_shard, Index class_offset,
                                                    Index num_classes, const L& labels, Comm& comm, DXo&& dX,
                                                    DWo&& dW_shard, Workspace<U>& ws, const Options& options = {}) {
  detail::check_host_communicator<Comm>();
  using P = std::decay_t<PP>;
  using T = typename P::value_type;
  static_assert(!detail::has_learnable_margins<P>::value, MARGINLOSS_LEARNABLE_MARGINS_NEED_DMARGINS);
  detail::check_row_major_matrix<DX, T>();
  detail::check_row_major_matrix<DW, T>();
  detail::check_output_matrix<DXo, T>();
  detail::check_output_matrix<DWo, T>();
  detail::check_workspace_scalar<U, T>();
  const auto loss = sharded_forward(std::forward<PP>(policy), X, W_shard, class_offset, num_classes, labels, comm, ws, options);
  sharded_backward(static_cast<const P&>(policy), W_shard, comm, ws, T(1), dX, dW_shard);
  return loss;
}

MARGINLOSS_NAMESPACE_END
