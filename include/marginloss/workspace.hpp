// marginloss: caller-owned memory of the CPU engine, reused across training steps.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "detail/checks.hpp"
#include "detail/plan.hpp"
#include "detail/threads.hpp"
#include "options.hpp"
#include "types.hpp"

/// Classes per tile of the CPU engine's sweeps (Workspace::class_tile), in [1, 256]; define it
/// before the first include to tune for another cache size.
#ifndef MARGINLOSS_CLASS_TILE
#define MARGINLOSS_CLASS_TILE 256
#endif
static_assert(MARGINLOSS_CLASS_TILE >= 1 && MARGINLOSS_CLASS_TILE <= 256, "MARGINLOSS_CLASS_TILE must be in [1, 256]");

MARGINLOSS_NAMESPACE_BEGIN

namespace detail {
struct Engine;

// Marks a workspace in use by one call. Copies start unmarked. Checked with one atomic
// exchange per call, so two threads sharing a workspace get an error, not mixed buffers.
class InUseFlag {
 public:
  InUseFlag() = default;
  InUseFlag(const InUseFlag&) {}
  InUseFlag& operator=(const InUseFlag&) { return *this; }
  bool try_acquire() { return !flag_.exchange(true, std::memory_order_acquire); }
  void release() { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};
}  // namespace detail

/// Holds everything a forward pass leaves for its backward pass: the normalised features, the
/// cosine buffer (B x C on the dense path, the only B x C buffer, which the backward overwrites
/// with dL/dcos; B x block when classes are processed in blocks), the norms and the per-row
/// log-partition values. Buffers are reused: a training loop that keeps one Workspace allocates
/// nothing per step after the first while B and D stay the same; class-sized buffers only grow,
/// so a class count that changes every step (active-class subsets) reuses them.
/// A Workspace may be used by one call at a time (a second call on it while one runs, from
/// another thread, throws instead of mixing their buffers); distinct workspaces are independent.
template <typename T>
class Workspace {
 public:
  /// An empty workspace; the first call sizes it.
  Workspace() = default;

  /// Bytes the engine needs for a batch of B samples, C classes (of this process) and feature
  /// dimension D, with classes processed in blocks of `block` -- the meaning of
  /// Options::class_block: 0 (default) the automatic choice for `memory_budget` (Options'
  /// default budget), >= C dense -- when run with `threads` OpenMP threads (default: as many as a
  /// parallel region would get now); `sharded` for one rank of the class-sharded loss. Besides
  /// the B x block cosines it counts, per thread beyond the first, a B x D partial dX, per class
  /// tile of a block a (max, sum) pair per row, the policy's once-per-row terms (64 bytes per row)
  /// and, sharded, the B x D partial dX that is all-reduced. The same plan (detail/plan.hpp)
  /// sizes reserve() and every call, so this is what they allocate.
  static std::size_t bytes_required(Index batch, Index dim, Index classes, Index block = 0, int threads = 0,
                                    std::size_t memory_budget = Options{}.memory_budget, bool sharded = false) {
    return plan(batch, dim, classes, block_for(batch, classes, block, memory_budget), threads, sharded).bytes();
  }

  /// Classes per tile of the engine's sweeps: each thread takes tiles of this many classes and
  /// does all the work of a tile (products, norms, row pass, projections) while the tile's rows
  /// of W and its B x tile cosines are in its cache. Measured at B = 256, D = 512 (fp32, Eigen):
  /// 128-256 classes are fastest for the three products, which also run ~2x faster in tiles than
  /// as one B x C product.
  /// Override with -DMARGINLOSS_CLASS_TILE=N (1 <= N <= 256) to tune for another cache size.
  static constexpr Index class_tile = MARGINLOSS_CLASS_TILE;

  /// Classes per tile for blocks of `block` classes: class_tile, or an eighth of the block (at
  /// least 32) when the block is small, so that up to 8 threads find work. Independent of the
  /// thread count, and so are the tiles' products and (max, sum) pairs: the loss and dW do not
  /// change with it.
  static Index tile_for_block(Index block) { return detail::tile_for_block(block, class_tile); }

  /// Allocates for the given shape up front, forward and backward buffers alike (optional: calls
  /// size the buffers themselves); `block` and the rest as in bytes_required().
  void reserve(Index batch, Index dim, Index classes, Index block = 0,
               std::size_t memory_budget = Options{}.memory_budget, bool sharded = false) {
    prepare(plan(batch, dim, classes, block_for(batch, classes, block, memory_budget), 0, sharded));
  }

  /// True between a forward() and the backward() that consumes it.
  bool holds_forward() const { return holds_forward_; }
  /// How many forwards this workspace has run: a Forward context remembers it, so that its
  /// backward can tell that a later forward has reused the buffers.
  std::uint64_t forward_serial() const { return forward_serial_; }
  /// Batch size B of the last forward (or reserve()).
  Index batch() const { return xhat_.rows(); }
  /// Feature dimension D of the last forward (or reserve()).
  Index dim() const { return xhat_.cols(); }
  /// All classes of the last forward, of every rank when sharded: C.
  Index num_classes() const { return num_classes_; }
  /// Classes of this process in the last forward: C, or the shard's rows when sharded.
  Index classes() const { return local_classes_; }
  /// Classes per block of the last forward: Options::class_block resolved, classes() on the
  /// dense path.
  Index class_block() const { return block_; }
  /// The loss of the last forward: the batch mean of the cross-entropy, plus regulariser() for
  /// policies with learnable margins.
  T loss() const { return loss_; }
  /// The margin regulariser included in loss() (AdaptiveMargin); 0 for other policies.
  T regulariser() const { return regulariser_; }

  /// Copies into `out` (B x classes()) the cosines cos(x_i, w_j), clamped to [-1, 1], that the
  /// last forward computed: what a miner reads instead of recomputing them (HardPrototypeMiner,
  /// SubsetOptions::keep_cosines). Available between a forward on the dense path (class_block()
  /// == classes()) and its backward, which overwrites them; throws invalid_argument otherwise.
  void cosines(Eigen::Ref<RowMatrix<T>> out) const {
    if (!holds_forward_)
      detail::fail("Workspace::cosines(): no forward holds them (call it after forward(), before backward())");
    if (block_ < local_classes_)
      detail::fail("Workspace::cosines(): the forward ran in class blocks of ", block_, " of ", local_classes_,
                   " classes; only the dense path keeps every cosine (Options::class_block)");
    detail::check_output_shape("out", out.rows(), out.cols(), batch(), local_classes_);
    // Stored tile after tile, each tile a contiguous B x tile matrix (the engine's sweep).
    const Index B = batch(), tile = tile_for_block(block_);
    for (Index j0 = 0; j0 < local_classes_; j0 += tile) {
      const Index n = std::min(tile, local_classes_ - j0);
      out.middleCols(j0, n) = Eigen::Map<const RowMatrix<T>>(cosine_storage_.data() + B * j0, B, n);
    }
  }

 private:
  friend struct detail::Engine;

  RowMatrix<T> xhat_;        // B x D, x_i / |x_i|
  // Storage that only grows, so that a changing class count (e.g. a different active-class set
  // each step) reuses it: the B x block cosines (clamped; dL/dcos / |w_j| after backward),
  // stored tile after tile (each tile a contiguous B x tile matrix), and 1/|w_j| for the C
  // classes of this process.
  Vector<T> cosine_storage_;
  RowMatrix<T> dx_partial_;  // B x D, this rank's share of dX before the all-reduce (sharded)
  Vector<T> x_norm_;         // B
  Vector<T> x_inv_norm_;     // B
  Vector<T> target_cos_;     // B, t_i
  Vector<T> lse_;            // B, logsumexp_j z_ij
  Vector<T> row_max_;        // B, running max of the online logsumexp
  Eigen::VectorXd row_sum_;  // B, running sum of exp(z - row_max)
  Vector<T> row_loss_;       // B
  Vector<T> dscale_;         // B, dL/dS_i (feature-norm scale)
  Vector<T> w_inv_norm_;     // >= C
  // Per class tile of the current block and row: the tile's max logit and sum of exp(z - max),
  // merged in tile order afterwards, so the loss does not depend on the thread count.
  Vector<T> tile_max_;
  Eigen::VectorXd tile_sum_;
  RowMatrix<T> thread_dx_;   // (threads - 1) B x D: partial dX of threads 1.. (thread 0 uses dX)
  Vector<T> thread_dscale_;  // threads x B: partial dL/dS_i
  // The policy's once-per-row terms (P::row_type, trivially copyable), B of them.
  std::vector<std::max_align_t> row_terms_;

  static Index block_for(Index batch, Index classes, Index block, std::size_t memory_budget) {
    Options o;
    o.class_block = block;
    o.memory_budget = memory_budget;
    return detail::resolve_class_block<T>(o, batch, classes, detail::kCpuBlockBytes);
  }
  // threads <= 0: as many as a parallel region would get now.
  static detail::CpuPlan<T> plan(Index batch, Index dim, Index classes, Index block, int threads, bool sharded) {
    return detail::make_cpu_plan<T>(batch, dim, classes, block, class_tile, threads > 0 ? threads : detail::max_threads(),
                                    sharded);
  }
  // Sizes every buffer of the plan; storage that only grows keeps what it has.
  void prepare(const detail::CpuPlan<T>& p) {
    const Index B = p.batch;
    xhat_.resize(B, p.dim);
    grow(cosine_storage_, static_cast<Index>(p.cosines()));
    grow(w_inv_norm_, p.classes);
    grow(tile_max_, static_cast<Index>(p.tile_pairs()));
    if (tile_sum_.size() < static_cast<Index>(p.tile_pairs())) tile_sum_.resize(static_cast<Index>(p.tile_pairs()));
    for (Vector<T>* v : {&x_norm_, &x_inv_norm_, &target_cos_, &lse_, &row_max_, &row_loss_, &dscale_}) v->resize(B);
    row_sum_.resize(B);
    labels_.resize(B);
    if (p.threads > 1 && (thread_dx_.rows() < static_cast<Index>(p.thread_dx_rows()) || thread_dx_.cols() != p.dim))
      thread_dx_.resize(static_cast<Index>(p.thread_dx_rows()), p.dim);
    grow(thread_dscale_, static_cast<Index>(p.thread_dscale()));
    if (p.sharded) dx_partial_.resize(B, p.dim);
    const std::size_t slots = (p.row_terms_bytes() + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
    if (row_terms_.size() < slots) row_terms_.resize(slots);
  }
  static void grow(Vector<T>& v, Index n) {
    if (v.size() < n) v.resize(n);
  }
  Eigen::Matrix<Index, Eigen::Dynamic, 1> labels_;
  Eigen::Matrix<Index, Eigen::Dynamic, 1> batch_classes_;  // distinct labels (learnable margins)
  Index batch_class_count_ = 0;
  Index num_classes_ = 0;    // all classes (of every rank)
  Index class_offset_ = 0;   // global index of this process's first class
  Index local_classes_ = 0;
  Index block_ = 0;
  T loss_ = T(0);
  T regulariser_ = T(0);
  bool regulariser_included_ = false;  // the forward added R (its backward adds dR/dm)
  bool holds_forward_ = false;
  std::uint64_t forward_serial_ = 0;
  // What the forward was called with, checked by its backward (detail/forward_record.hpp).
  std::uint64_t policy_fingerprint_ = 0;
  detail::InUseFlag in_use_;
  std::vector<double> agree_;  // the ranks' call records (sharded)
};

MARGINLOSS_NAMESPACE_END
