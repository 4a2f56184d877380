// marginloss: the loss over an active subset of the classes (docs/formulas.md §6-7).
//
//   ml::SubsetWorkspace<T> sws;                     // keep it across steps
//   ml::ActiveSet set = miner.active_set(labels);  // or PartialFCSampler, or {classes, local_labels}
//   T loss = ml::forward_backward(policy, X, W, set, {dX, dW}, sws);
//
// Hard Prototype Mining (AdaptiveFace) and Partial FC train each step on a subset A of the
// C classes: the softmax runs over the rows W[A] only, with labels re-indexed into A. This
// computes exactly that loss -- the loss of forward_backward() on the |A| x D matrix whose
// row a is W.row(active[a]), with local_labels in [0, |A|) -- without a user-visible copy
// of W: the active rows are gathered into `sws`, the engine runs on them, and the gradient
// rows are scattered back into the caller's C x D dW.
//
// * set.classes: distinct class ids in [0, C), in any order (row a of the subset is class
//   classes[a]); set.local_labels[i] is the position of sample i's class in set.classes.
//   HardPrototypeMiner and PartialFCSampler return an ActiveSet.
// * dX (B x D) is overwritten. dW (C x D): rows of active classes are overwritten with their
//   gradient; the other rows are left UNTOUCHED by default (nothing of O(C D) is done per
//   step), or set to zero with SubsetOptions::zero_inactive_rows = true -- use that when the
//   optimiser steps every row of a full-size dW (see partial_fc.hpp on optimiser state).
// * Policies with per-class margins (ClassMargins, AdaptiveMargin) run as the same policy with
//   its margins view re-pointed at the active classes' margins, gathered into `sws`.
// * AdaptiveMargin (learnable margins): dmargins (C entries) is ALWAYS written in full, because the regulariser
//   can reach classes outside A. The loss is
//       L_A = CE over the classes in A  +  R,
//   and R is, with SubsetOptions::regulariser = as_policy (default), the policy's own
//   regulariser on the FULL margin vector: scope all_classes gives R = -lambda_m mean over
//   all C margins (so L_A is the full loss with only the softmax restricted, and every
//   margin, active or not, gets dR/dm = -lambda_m / C); scope batch_classes gives R over the
//   batch's classes, which are always active (inactive entries of dmargins are 0). With
//   regulariser = active_classes, R = -lambda_m mean over the |A| active margins, and only
//   active margins receive gradient (the reading "only the active prototypes and their
//   margins take part" of HPM). With A = all classes, as_policy gives exactly
//   forward_backward()'s loss and gradients.
//
// Memory: SubsetWorkspace keeps the gathered rows, their gradient and the engine's
// Workspace, grown to the largest active set seen and reused; its own buffers never shrink,
// so they are not reallocated per step. (The engine's Workspace resizes its B x |A| and |A|
// buffers when |A| changes from one step to the next.)
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../errors.hpp"
#include "../loss.hpp"
#include "../policies/adaptive_margin.hpp"
#include "../policies/common.hpp"
#include "../types.hpp"
#include "../workspace.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// A vector of class or sample indices.
using IndexVector = Eigen::Matrix<Index, Eigen::Dynamic, 1>;

/// The classes of one training step and the batch's labels re-indexed into them.
struct ActiveSet {
  IndexVector classes;       ///< distinct global class ids; row a of the subset is classes(a)
  IndexVector local_labels;  ///< B entries: position of each sample's class in `classes`
  Index size() const { return classes.size(); }  ///< |A|, the number of active classes
};

/// What the margin regulariser of AdaptiveMargin covers on a subset (see the top of
/// sampling/subset.hpp).
enum class SubsetRegulariser {
  as_policy,       ///< the policy's scope on the full margin vector (default: the defined loss)
  active_classes,  ///< mean over the active classes only
};

namespace detail {
template <>
struct enum_info<SubsetRegulariser> {
  static constexpr int count = 2;
  static constexpr const char* name = "SubsetRegulariser";
};
}  // namespace detail

/// Options of the subset forward_backward() (an ActiveSet argument).
struct SubsetOptions {
  bool zero_inactive_rows = false;  ///< false: dW rows outside the active set are untouched
  SubsetRegulariser regulariser = SubsetRegulariser::as_policy;  ///< AdaptiveMargin's R on the subset
  Options engine = {};  ///< class blocks / memory budget of the engine, on the subset
  /// Keep the B x |A| cosines the loss computed in the SubsetWorkspace (cosines()), for
  /// HardPrototypeMiner::update(sws, W, set) instead of its own product. Needs the dense path
  /// (engine.class_block 0 with B x |A| within the memory budget, or >= |A|): a call that runs
  /// in class blocks throws.
  bool keep_cosines = false;
};

/// Caller-owned memory of the subset forward_backward(): the gathered active rows of W, their
/// gradient, the active margins and the engine's Workspace, grown to the largest active set
/// seen and reused across steps.
template <typename T>
class SubsetWorkspace {
 public:
  /// The engine's workspace of the last subset call (its shape is B x |A|).
  const Workspace<T>& engine() const { return ws_; }
  /// The same, mutable (e.g. to reserve() it up front).
  Workspace<T>& engine() { return ws_; }
  /// The gathered active rows of the last call (|A| x D).
  Eigen::Map<const RowMatrix<T>> gathered() const { return {w_.data(), rows_, dim_}; }
  /// The clamped cosines cos(x_i, w_{active[a]}) of the last call (B x |A|) when it ran with
  /// SubsetOptions::keep_cosines; 0 x 0 otherwise.
  Eigen::Map<const RowMatrix<T>> cosines() const { return {cos_.data(), cos_rows_, cos_cols_}; }

  /// \cond INTERNAL
  // Internal storage (grows, never shrinks): public for detail::subset_run, not part of the API.
  std::vector<T> w_, dw_, margins_, dmargins_;
  std::vector<unsigned char> seen_;
  std::vector<Index> ids_;  // the regulariser's classes J
  std::vector<T> cos_;      // B x |A| cosines (keep_cosines)
  Index cos_rows_ = 0, cos_cols_ = 0;
  Workspace<T> ws_;
  Index rows_ = 0, dim_ = 0;
  /// \endcond
};

namespace detail {

template <typename T, typename DA>
void gather_active(const Eigen::Ref<const RowMatrix<T>>& W, const Eigen::MatrixBase<DA>& active, Index num_classes,
                   SubsetWorkspace<T>& sws) {
  const Index A = active.size(), D = W.cols();
  if (A == 0) fail("active has 0 entries: the subset needs at least one class");
  if (A > num_classes) fail("active has ", A, " entries but there are only ", num_classes, " classes");
  // Every id is range-checked (in its own signedness: a 64-bit unsigned id >= 2^63 must not
  // wrap) before any is used as an index.
  for (Index a = 0; a < A; ++a) {
    const auto k = active.derived().coeff(a);
    if (!index_in_range(k, num_classes)) fail_index("active", a, k, num_classes);
  }
  sws.seen_.resize(static_cast<std::size_t>(num_classes), 0);
  Index bad = -1;
  for (Index a = 0; a < A; ++a) {
    auto& mark = sws.seen_[static_cast<std::size_t>(active.derived().coeff(a))];
    if (mark && bad < 0) bad = a;
    mark = 1;
  }
  for (Index a = 0; a < A; ++a) sws.seen_[static_cast<std::size_t>(active.derived().coeff(a))] = 0;
  if (bad >= 0) fail("active[", bad, "] = ", static_cast<long long>(active.derived().coeff(bad)), " appears twice");
  const auto n = static_cast<std::size_t>(A * D);
  if (sws.w_.size() < n) sws.w_.resize(n);
  if (sws.dw_.size() < n) sws.dw_.resize(n);
  sws.rows_ = A;
  sws.dim_ = D;
  for (Index a = 0; a < A; ++a) {
    const T* src = W.row(static_cast<Index>(active.derived().coeff(a))).data();
    std::copy(src, src + D, sws.w_.data() + a * D);
  }
}

template <typename T, typename DA>
void scatter_active(SubsetWorkspace<T>& sws, const Eigen::MatrixBase<DA>& active, bool zero_inactive,
                    Eigen::Ref<RowMatrix<T>> dW) {
  const Index A = active.size(), D = dW.cols();
  if (zero_inactive) dW.setZero();
  for (Index a = 0; a < A; ++a) {
    const T* src = sws.dw_.data() + a * D;
    std::copy(src, src + D, dW.row(static_cast<Index>(active.derived().coeff(a))).data());
  }
}

// forward, the cosines kept when asked, backward: the engine on the gathered rows Wa.
template <typename PP, typename DX, typename DL, typename P = std::decay_t<PP>, typename T = typename P::value_type>
T subset_engine(PP&& policy, const Eigen::MatrixBase<DX>& X, const Eigen::Map<const RowMatrix<T>>& Wa,
                const Eigen::MatrixBase<DL>& local_labels, Eigen::Ref<RowMatrix<T>> dX,
                Eigen::Map<RowMatrix<T>>& dWa, T* dma, SubsetWorkspace<T>& sws, const SubsetOptions& options) {
  if (options.keep_cosines && resolve_class_block<T>(options.engine, X.rows(), Wa.rows(), kCpuBlockBytes) < Wa.rows())
    fail("SubsetOptions::keep_cosines: the engine would run the ", Wa.rows(),
         " active classes in class blocks, which keep no full cosine matrix (engine.class_block, memory_budget)");
  LocalCommunicator local;
  const T loss = forward_rows(std::forward<PP>(policy), X, Wa, 0, Wa.rows(), local_labels.derived(), local, sws.ws_,
                              options.engine, /*with_regulariser=*/false);
  if (options.keep_cosines) {
    const Index B = X.rows(), A = Wa.rows();
    if (sws.cos_.size() < static_cast<std::size_t>(B * A)) sws.cos_.resize(static_cast<std::size_t>(B * A));
    Eigen::Map<RowMatrix<T>> kept(sws.cos_.data(), B, A);
    sws.ws_.cosines(kept);  // throws when the engine ran in class blocks
    sws.cos_rows_ = B;
    sws.cos_cols_ = A;
  }
  Engine::backward(static_cast<const P&>(policy), Eigen::Ref<const RowMatrix<T>>(Wa), local, sws.ws_, T(1), dX,
                   Eigen::Ref<RowMatrix<T>>(dWa), dma, dma ? Wa.rows() : Index(0));
  return loss;
}

template <typename PP, typename DX, typename DW, typename DA, typename DL, typename P = std::decay_t<PP>,
          typename T = typename P::value_type>
T subset_run(PP&& policy, const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W,
             const Eigen::MatrixBase<DA>& active, const Eigen::MatrixBase<DL>& local_labels,
             Eigen::Ref<RowMatrix<T>> dX, Eigen::Ref<RowMatrix<T>> dW, T* dmargins, Index dmargins_size,
             SubsetWorkspace<T>& sws, const SubsetOptions& options) {
  static_assert(is_margin_policy_v<P>, "marginloss: P does not satisfy the policy contract (policies/common.hpp)");
  check_row_major_matrix<DX, T>();
  check_row_major_matrix<DW, T>();
  check_label_vector<DA>();
  check_label_vector<DL>();
  const Index C = W.rows(), D = W.cols();
  check_enum("SubsetOptions", "regulariser", options.regulariser);
  if (C == 0) fail("W has 0 rows: there must be at least one class");
  check_output_shape("dW", dW.rows(), dW.cols(), C, D);
  if constexpr (has_class_values<P>::value) {
    policy.validate();
    check_class_values_on_host(policy, C);
  }
  sws.cos_rows_ = sws.cos_cols_ = 0;  // a call that fails keeps no stale cosines
  gather_active<T>(Eigen::Ref<const RowMatrix<T>>(W.derived()), active, C, sws);
  const Index A = sws.rows_;
  Eigen::Map<const RowMatrix<T>> Wa(sws.w_.data(), A, D);
  Eigen::Map<RowMatrix<T>> dWa(sws.dw_.data(), A, D);
  T loss;
  if constexpr (has_class_values<P>::value) {
    // The same policy, its view re-pointed at the active classes' margins (row a is class
    // active[a], local label a).
    if (sws.margins_.size() < static_cast<std::size_t>(A)) sws.margins_.resize(static_cast<std::size_t>(A));
    const auto margins = policy.class_values();
    for (Index a = 0; a < A; ++a)
      sws.margins_[static_cast<std::size_t>(a)] = margins[static_cast<Index>(active.derived().coeff(a))];
    P local = policy;
    local.margins = ClassValues<T>(sws.margins_.data(), A);
    // A stateful base (ClassMargins<CurricularFace>) updates the local copy; its state goes back
    // to the caller's policy below, its margins view unchanged.
    check_state_hook<PP>(policy);
    const auto give_back_state = [&] {
      if constexpr (modifiable_policy_v<PP>) {
        const auto margins = policy.margins;
        policy = local;
        policy.margins = margins;
      }
    };
    if constexpr (has_learnable_margins<P>::value) {
      if (dmargins_size != C) fail("dmargins has ", dmargins_size, " entries but there are ", C, " classes");
      if (sws.dmargins_.size() < static_cast<std::size_t>(A)) sws.dmargins_.resize(static_cast<std::size_t>(A));
      Eigen::Map<Vector<T>> dma(sws.dmargins_.data(), A);
      // The engine leaves the regulariser out; it is added here on the FULL margin vector over
      // the classes J of SubsetOptions::regulariser: as_policy -> the policy's scope (all C
      // classes, or the batch's distinct classes), active_classes -> the active set.
      loss = subset_engine(local, X, Wa, local_labels, dX, dWa, dma.data(), sws, options);
      give_back_state();
      std::fill(dmargins, dmargins + C, T(0));
      for (Index a = 0; a < A; ++a) dmargins[static_cast<Index>(active.derived().coeff(a))] = dma(a);
      const bool all_classes =
          options.regulariser == SubsetRegulariser::as_policy && !policy.regulariser_over_batch();
      if (options.regulariser == SubsetRegulariser::active_classes) {
        sws.ids_.resize(static_cast<std::size_t>(A));
        for (Index a = 0; a < A; ++a) sws.ids_[static_cast<std::size_t>(a)] = static_cast<Index>(active.derived().coeff(a));
      } else if (!all_classes) {  // the batch's distinct classes, in class order as the engine sums them
        const Index B = local_labels.size();
        sws.ids_.resize(static_cast<std::size_t>(B));
        for (Index i = 0; i < B; ++i)
          sws.ids_[static_cast<std::size_t>(i)] = static_cast<Index>(active.derived().coeff(local_labels.derived().coeff(i)));
        std::sort(sws.ids_.begin(), sws.ids_.end());
        sws.ids_.erase(std::unique(sws.ids_.begin(), sws.ids_.end()), sws.ids_.end());
      }
      const Index* ids = all_classes ? nullptr : sws.ids_.data();
      const Index n = all_classes ? C : static_cast<Index>(sws.ids_.size());
      const T w = policy.regulariser_weight();
      loss += margin_regulariser(w, margins, ids, n);
      add_margin_regulariser_gradient(T(1), w, ids, n, dmargins);
    } else {
      static_cast<void>(dmargins);
      static_cast<void>(dmargins_size);
      loss = subset_engine(local, X, Wa, local_labels, dX, dWa, static_cast<T*>(nullptr), sws, options);
      give_back_state();
    }
  } else {
    static_cast<void>(dmargins);
    static_cast<void>(dmargins_size);
    loss = subset_engine(std::forward<PP>(policy), X, Wa, local_labels, dX, dWa, static_cast<T*>(nullptr), sws,
                         options);
  }
  scatter_active<T>(sws, active, options.zero_inactive_rows, dW);
  return loss;
}

}  // namespace detail

/// The loss over the active classes of `set` (row a of the subset is W.row(set.classes[a]);
/// set.local_labels in [0, |A|)), without a user-visible copy of W. Writes dX (B x D), the active
/// rows of dW (C x D) and, with zero_inactive_rows, zeros elsewhere; for learnable margins
/// dmargins, all C entries. Returns the loss.
template <typename PP, typename DX, typename DW>
detail::policy_value_t<PP> forward_backward(PP&& policy, const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W,
                                            const ActiveSet& set, Gradients<detail::policy_value_t<PP>> out,
                                            SubsetWorkspace<detail::policy_value_t<PP>>& sws,
                                            const SubsetOptions& options = {}) {
  using T = detail::policy_value_t<PP>;
  detail::check_dmargins_given<std::decay_t<PP>>(out);
  return detail::subset_run(std::forward<PP>(policy), X, W, set.classes, set.local_labels, out.dX, out.dW,
                            out.has_dmargins() ? out.dmargins.data() : static_cast<T*>(nullptr), out.dmargins.size(),
                            sws, options);
}

MARGINLOSS_NAMESPACE_END
