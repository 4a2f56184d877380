// marginloss: Hard Prototype Mining of AdaptiveFace (Liu et al., CVPR 2019; docs/formulas.md §6).
//
// Every class j keeps a queue Q_j of hard classes. Each step the classification layer uses
// only the batch's classes and their queues (an ActiveSet for the subset forward_backward()):
//
//   ml::HardPrototypeMiner<float> hpm;            // options: k, h, queue capacity, refresh, cap
//   hpm.build(W);                                 // k nearest prototypes of every class
//   for (each step) {
//     hpm.step(W);                                // counts the step; rebuilds when due
//     const ml::ActiveSet& a = hpm.active_set(labels);
//     loss = ml::forward_backward(policy, X, W, a, {dX, dW, dm}, sws, so);  // so.keep_cosines
//     hpm.update(sws, W, a);                      // the queue rule, from the loss's cosines
//                                                 // (or update(X, W, a): one more product)
//     ... optimiser step ...
//   }
//
// * Prototypes are the rows of W; similarity is their cosine. build() finds each class's k
//   most similar other classes exactly (nearest_prototypes(), sampling/nearest_prototypes.hpp:
//   blocked products, never the C x C matrix; ties go to the smaller class id).
// * Queue order: front = most recently mined, then the nearest prototypes by similarity.
//   build() sets Q_j to its k nearest (those with similarity > h). update(): for every sample
//   whose top-scoring class (cosines over the active set) is not its label, every class whose
//   cosine is strictly above the target cosine is pushed to the FRONT of Q_{y_i}, the highest
//   scoring one ending first (a class already queued moves to the front), but only if its
//   prototype similarity to y_i exceeds h; the queue keeps at most `queue_capacity` classes
//   (the back is dropped). Then every queue touched by the batch is pruned: a class stays in
//   Q_j only while its prototype similarity to j (current W) is > h. Raising h over training
//   (set_threshold) makes the mined classes harder; prune_all() applies a new h at once.
// * refresh (every `refresh_every` steps, counted by step(); 0 = never): the k nearest are
//   recomputed from the current W, Q_j becomes them followed by its previous members that
//   still pass h, up to the capacity.
// * Active set: the batch's distinct labels in order of first appearance, then queue members
//   in rounds -- the first member of each batch class's queue (classes in the same order),
//   then the second members, ... -- skipping classes already present. With max_active > 0
//   the rounds stop when the set reaches max_active: every batch label is always kept (a
//   batch with more distinct labels than max_active gives its labels alone) and the queue
//   members dropped are the later ones in the rounds (deeper in their queues).
// * Defaults: the paper's values of k, h, the queue length and the refresh period were not
//   recovered; k = 10, h = 0 (classes with positive prototype similarity), capacity 2k,
//   refresh every 1000 steps and no cap are this library's choices.
// * With AdaptiveMargin, SubsetOptions::regulariser = active_classes keeps the margins of
//   classes outside the active set fixed (only the active prototypes and margins take part).
// The miner is deterministic: it draws no random numbers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "../detail/row_norms.hpp"
#include "../detail/validate.hpp"
#include "../errors.hpp"
#include "../types.hpp"
#include "nearest_prototypes.hpp"
#include "subset.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// The settings of HardPrototypeMiner (this library's choices: the paper's were not recovered).
struct HardPrototypeMinerOptions {
  Index k = 10;                  ///< nearest prototypes per class (at most C - 1 are used)
  double h = 0.0;                ///< similarity threshold of the queues
  Index queue_capacity = 0;      ///< classes per queue (at most C - 1 are used); 0: 2k
  Index refresh_every = 1000;    ///< steps between rebuilds of the neighbours; 0: never
  Index max_active = 0;          ///< cap on the active set; 0: none
  /// build(): similarities are computed in tiles of tile_rows x tile_cols, one per thread.
  Index tile_rows = 256;
  Index tile_cols = 2048;        ///< see tile_rows
};

/// Hard Prototype Mining of AdaptiveFace (Liu et al., CVPR 2019; docs/formulas.md §6): every
/// class j keeps a queue Q_j of hard classes (prototypes = normalised rows of W, similarity =
/// their cosine); each step trains on the batch's classes and their queues (active_set()), and
/// update() pushes the classes that beat a sample's target to the front of its class's queue.
/// The rules are stated at the top of sampling/hard_prototype_miner.hpp. Deterministic.
template <typename T>
class HardPrototypeMiner {
 public:
  /// Throws invalid_argument unless k >= 1, h is finite, tile sizes >= 1 and the other counts
  /// are >= 0. Call build(W) (or step(W)) before the first active_set().
  explicit HardPrototypeMiner(const HardPrototypeMinerOptions& options = {}) : o_(options) {
    if (o_.k < 1) detail::fail("HardPrototypeMiner: k = ", o_.k, " must be >= 1");
    if (o_.queue_capacity < 0) detail::fail("HardPrototypeMiner: queue_capacity = ", o_.queue_capacity, " must be >= 0");
    if (o_.refresh_every < 0) detail::fail("HardPrototypeMiner: refresh_every = ", o_.refresh_every, " must be >= 0");
    if (o_.max_active < 0) detail::fail("HardPrototypeMiner: max_active = ", o_.max_active, " must be >= 0");
    if (!std::isfinite(o_.h)) detail::fail("HardPrototypeMiner: h = ", o_.h, " must be finite");
    if (o_.tile_rows < 1 || o_.tile_cols < 1)
      detail::fail("HardPrototypeMiner: tile_rows = ", o_.tile_rows, " and tile_cols = ", o_.tile_cols, " must be >= 1");
    // 2k saturates: a queue never holds more than C - 1 classes, which build() applies.
    if (o_.queue_capacity == 0)
      o_.queue_capacity = o_.k > std::numeric_limits<Index>::max() / 2 ? std::numeric_limits<Index>::max() : 2 * o_.k;
  }

  /// The settings, with queue_capacity resolved (0 becomes 2k).
  const HardPrototypeMinerOptions& options() const { return o_; }
  Index num_classes() const { return C_; }  ///< C of the last build; 0 before the first
  Index k() const { return k_; }  ///< min(options().k, C - 1)
  double threshold() const { return o_.h; }  ///< h, the similarity a queued class must exceed
  /// Sets h for the rules that follow (raising it over training mines harder classes); queues
  /// are pruned by it as they are touched, or all at once by prune_all().
  void set_threshold(double h) {
    if (!std::isfinite(h)) detail::fail("HardPrototypeMiner: h = ", h, " must be finite");
    o_.h = h;
  }
  /// Steps counted by step() since the last build or refresh.
  Index steps_since_build() const { return steps_; }

  /// Row j: the k most similar other classes of j, by decreasing similarity (C x k).
  const Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& neighbours() const { return nbr_; }
  /// The cosines of neighbours(), same layout (C x k).
  const RowMatrix<T>& neighbour_similarities() const { return nsim_; }

  /// The queue of class j, front first.
  Eigen::Map<const IndexVector> queue(Index j) const {
    check_class(j);
    return {q_.data() + j * cap_, qn_[static_cast<std::size_t>(j)]};
  }

  /// Computes the neighbours of every class and resets each queue to them (similarity > h).
  template <typename DW>
  void build(const Eigen::MatrixBase<DW>& W) {
    compute_neighbours(W);
    reset_queues_to_neighbours();
  }

  /// Recomputes the neighbours; Q_j = new neighbours, then its old members that pass h.
  template <typename DW>
  void refresh(const Eigen::MatrixBase<DW>& W) {
    if (C_ == 0) return build(W);
    const std::vector<Index> old_q = q_, old_n = qn_;
    const Index old_cap = cap_;
    compute_neighbours(W);
    if (old_cap != cap_ || static_cast<Index>(old_n.size()) != C_) return reset_queues_to_neighbours();
    for (Index j = 0; j < C_; ++j) {
      Index n = 0;
      Index* q = q_.data() + j * cap_;
      for (Index r = 0; r < k_ && n < cap_; ++r)
        if (static_cast<double>(nsim_(j, r)) > o_.h) q[n++] = nbr_(j, r);
      for (Index r = 0; r < old_n[static_cast<std::size_t>(j)] && n < cap_; ++r) {
        const Index c = old_q[static_cast<std::size_t>(j * cap_ + r)];
        if (std::find(q, q + n, c) == q + n && prototype_cosine(W, j, c) > o_.h) q[n++] = c;
      }
      qn_[static_cast<std::size_t>(j)] = n;
    }
  }

  /// Counts one training step and refreshes when refresh_every steps have passed since the
  /// last build; builds on the first call (and when W's row count changes). Returns true when
  /// it (re)built.
  template <typename DW>
  bool step(const Eigen::MatrixBase<DW>& W) {
    if (C_ == 0 || C_ != W.rows()) {
      build(W);
      steps_ = 0;
      return true;
    }
    ++steps_;
    if (o_.refresh_every > 0 && steps_ >= o_.refresh_every) {
      refresh(W);
      steps_ = 0;
      return true;
    }
    return false;
  }

  /// The active set of a batch: its distinct labels in order of first appearance, then queue
  /// members in rounds (first members of each queue, then second, ...) while the set is below
  /// max_active (every label is kept).
  /// Held by the miner until the next call.
  template <typename DL>
  const ActiveSet& active_set(const Eigen::MatrixBase<DL>& labels) {
    active_set(labels, set_);
    return set_;
  }

  /// The same into a caller-owned ActiveSet.
  template <typename DL>
  void active_set(const Eigen::MatrixBase<DL>& labels, ActiveSet& out) {
    detail::check_label_vector<DL>();
    require_built();
    const Index B = labels.size();
    if (B == 0) detail::fail("HardPrototypeMiner: labels is empty");
    detail::copy_labels(labels, C_, y_);
    order_.clear();
    for (Index i = 0; i < B; ++i) {
      auto& p = pos_[static_cast<std::size_t>(y_(i))];
      if (p < 0) {
        p = static_cast<Index>(order_.size());
        order_.push_back(y_(i));
      }
    }
    const Index n_labels = static_cast<Index>(order_.size());
    const Index limit = o_.max_active > 0 ? std::max(o_.max_active, n_labels) : C_;
    for (Index r = 0; r < cap_ && static_cast<Index>(order_.size()) < limit; ++r) {
      for (Index l = 0; l < n_labels && static_cast<Index>(order_.size()) < limit; ++l) {
        const Index j = order_[static_cast<std::size_t>(l)];
        if (r >= qn_[static_cast<std::size_t>(j)]) continue;
        const Index c = q_[static_cast<std::size_t>(j * cap_ + r)];
        auto& p = pos_[static_cast<std::size_t>(c)];
        if (p < 0) {
          p = static_cast<Index>(order_.size());
          order_.push_back(c);
        }
      }
    }
    const Index A = static_cast<Index>(order_.size());
    out.classes.resize(A);
    for (Index a = 0; a < A; ++a) out.classes(a) = order_[static_cast<std::size_t>(a)];
    out.local_labels.resize(B);
    for (Index i = 0; i < B; ++i) out.local_labels(i) = pos_[static_cast<std::size_t>(y_(i))];
    for (Index a = 0; a < A; ++a) pos_[static_cast<std::size_t>(order_[static_cast<std::size_t>(a)])] = -1;
  }

  /// The queue rule from this step's cosines over the active set (X raw, B x D; W raw, C x D).
  /// Costs one B x |A| x D product; update_from_scores() takes scores computed elsewhere.
  template <typename DX, typename DW>
  void update(const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W, const ActiveSet& set) {
    detail::check_row_major_matrix<DX, T>();
    detail::check_row_major_matrix<DW, T>();
    require_built();
    check_set(W, set);
    const Index B = X.rows(), D = X.cols(), A = set.size();
    if (B != set.local_labels.size())
      detail::fail("HardPrototypeMiner::update: X has ", B, " rows but the active set has ", set.local_labels.size(), " labels");
    if (D != W.cols()) detail::fail("HardPrototypeMiner::update: X has ", D, " columns but W has ", W.cols());
    // Buffers grow to the largest shape seen and are reused.
    if (wa_.size() < static_cast<std::size_t>(A * D)) wa_.resize(static_cast<std::size_t>(A * D));
    if (scores_.size() < static_cast<std::size_t>(B * A)) scores_.resize(static_cast<std::size_t>(B * A));
    if (ainv_.size() < static_cast<std::size_t>(A)) ainv_.resize(static_cast<std::size_t>(A));
    Eigen::Map<RowMatrix<T>> Wa(wa_.data(), A, D), S(scores_.data(), B, A);
    for (Index a = 0; a < A; ++a) Wa.row(a) = W.derived().row(set.classes(a));
    for (Index a = 0; a < A; ++a) {
      const double n = detail::stable_row_norm(Wa.row(a).data(), D);
      if (!detail::norm_accepted<T>(n))
        detail::fail_bad_row<T>("W", W.derived(), set.classes(a), n);
      ainv_[static_cast<std::size_t>(a)] = static_cast<T>(1.0 / n);
      Wa.row(a) *= ainv_[static_cast<std::size_t>(a)];  // normalised before the product, as in the loss
    }
    detail::compute_row_norms<T>("X", Eigen::Ref<const RowMatrix<T>>(X.derived()), nullptr, xinv_);
    S.noalias() = X.derived() * Wa.transpose();
    for (Index i = 0; i < B; ++i) S.row(i) *= xinv_(i);
    update_from_scores(S, W, set);
  }

  /// The queue rule from the cosines the subset loss kept (the subset forward_backward with
  /// SubsetOptions::keep_cosines, on this `set`): no product, no gather of W[A].
  template <typename DW>
  void update(const SubsetWorkspace<T>& sws, const Eigen::MatrixBase<DW>& W, const ActiveSet& set) {
    if (sws.cosines().size() == 0)
      detail::fail("HardPrototypeMiner::update: the SubsetWorkspace holds no cosines: run the subset forward_backward "
                   "with SubsetOptions::keep_cosines = true first");
    update_from_scores(sws.cosines(), W, set);
  }

  /// The queue rule from a B x |A| score matrix (cosines, or any score with the same order):
  /// for a misclassified sample, each class scoring above its label goes to the front of
  /// Q_{y_i} if its similarity to y_i exceeds h; then the touched queues are pruned.
  template <typename DS, typename DW>
  void update_from_scores(const Eigen::MatrixBase<DS>& scores, const Eigen::MatrixBase<DW>& W, const ActiveSet& set) {
    require_built();
    check_set(W, set);
    const Index B = set.local_labels.size(), A = set.size();
    if (scores.rows() != B || scores.cols() != A)
      detail::fail("HardPrototypeMiner: scores is ", scores.rows(), "x", scores.cols(), " but must be ", B, "x", A);
    touched_.clear();
    for (Index i = 0; i < B; ++i) {
      const Index yl = set.local_labels(i);
      if (!(yl >= 0 && yl < A)) detail::fail("HardPrototypeMiner: local_labels[", i, "] = ", yl, " is out of range [0, ", A, ")");
      const Index y = set.classes(yl);
      if (std::find(touched_.begin(), touched_.end(), y) == touched_.end()) touched_.push_back(y);
      const T t = scores.derived().coeff(i, yl);
      hard_.clear();
      for (Index a = 0; a < A; ++a)
        if (a != yl && scores.derived().coeff(i, a) > t) hard_.push_back(a);
      if (hard_.empty()) continue;  // the label scores highest (ties count as correct)
      // Ascending score (ties: larger column first), so that the highest ends at the front.
      std::sort(hard_.begin(), hard_.end(), [&](Index a, Index b) {
        const T sa = scores.derived().coeff(i, a), sb = scores.derived().coeff(i, b);
        return sa < sb || (sa == sb && a > b);
      });
      for (Index a : hard_) {
        const Index c = set.classes(a);
        if (prototype_cosine(W, y, c) > o_.h) push_front(y, c);
      }
    }
    for (Index j : touched_) prune(W, j);
  }

  /// Removes from every queue the classes whose similarity to its owner is <= h.
  template <typename DW>
  void prune_all(const Eigen::MatrixBase<DW>& W) {
    require_built();
    if (W.rows() != C_) detail::fail("HardPrototypeMiner: W has ", W.rows(), " rows but the miner was built for ", C_);
    for (Index j = 0; j < C_; ++j) prune(W, j);
  }

 private:
  void check_class(Index j) const {
    if (!(j >= 0 && j < C_)) detail::fail("HardPrototypeMiner: class ", j, " is out of range [0, ", C_, ")");
  }
  void require_built() const {
    if (C_ == 0) detail::fail("HardPrototypeMiner: call build(W) (or step(W)) first");
  }
  template <typename DW>
  void check_set(const Eigen::MatrixBase<DW>& W, const ActiveSet& set) const {
    if (W.rows() != C_) detail::fail("HardPrototypeMiner: W has ", W.rows(), " rows but the miner was built for ", C_);
    for (Index a = 0; a < set.size(); ++a) check_class(set.classes(a));
  }

  void push_front(Index j, Index c) {
    Index* q = q_.data() + j * cap_;
    Index& n = qn_[static_cast<std::size_t>(j)];
    Index* hit = std::find(q, q + n, c);
    if (hit != q + n) {
      std::rotate(q, hit, hit + 1);  // move to the front
      return;
    }
    if (n < cap_) ++n;
    std::copy_backward(q, q + n - 1, q + n);
    q[0] = c;
  }

  template <typename DW>
  void prune(const Eigen::MatrixBase<DW>& W, Index j) {
    Index* q = q_.data() + j * cap_;
    Index& n = qn_[static_cast<std::size_t>(j)];
    Index kept = 0;
    for (Index r = 0; r < n; ++r)
      if (prototype_cosine(W, j, q[r]) > o_.h) q[kept++] = q[r];
    n = kept;
  }

  // Q_j = the neighbours of j whose similarity exceeds h, nearest first.
  void reset_queues_to_neighbours() {
    qn_.assign(static_cast<std::size_t>(C_), 0);
    for (Index j = 0; j < C_; ++j) {
      Index n = 0;
      for (Index r = 0; r < k_ && n < cap_; ++r)
        if (static_cast<double>(nsim_(j, r)) > o_.h) q_[static_cast<std::size_t>(j * cap_ + n++)] = nbr_(j, r);
      qn_[static_cast<std::size_t>(j)] = n;
    }
  }

  // The neighbours of every class (sampling/nearest_prototypes.hpp), committed only when the
  // search succeeds: a W the loss would reject leaves the miner as it was.
  template <typename DW>
  void compute_neighbours(const Eigen::MatrixBase<DW>& W) {
    if (W.rows() < 2) detail::fail("HardPrototypeMiner: W has ", W.rows(), " rows: mining needs at least 2 classes");
    NearestPrototypes<T> found = nearest_prototypes(W, o_.k, o_.tile_rows, o_.tile_cols);
    C_ = W.rows();
    k_ = found.ids.cols();
    // A queue holds distinct classes other than its owner: at most C - 1, whatever the options
    // ask (so a huge queue_capacity allocates C (C - 1) entries at most, not C x capacity).
    cap_ = std::max(std::min(o_.queue_capacity, C_ - 1), k_);
    q_.assign(static_cast<std::size_t>(C_ * cap_), 0);
    qn_.assign(static_cast<std::size_t>(C_), 0);
    pos_.assign(static_cast<std::size_t>(C_), -1);
    steps_ = 0;
    nbr_.swap(found.ids);
    nsim_.swap(found.similarities);
  }

  HardPrototypeMinerOptions o_;
  Index C_ = 0, k_ = 0, cap_ = 0, steps_ = 0;
  Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> nbr_;
  RowMatrix<T> nsim_;
  Vector<T> xinv_;
  std::vector<Index> q_, qn_, pos_, order_, touched_, hard_;
  Eigen::Matrix<Index, Eigen::Dynamic, 1> y_;
  std::vector<T> wa_, scores_, ainv_;
  ActiveSet set_;
};

MARGINLOSS_NAMESPACE_END
