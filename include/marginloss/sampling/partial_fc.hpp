// marginloss: Partial FC class sampling (An et al., insightface; docs/formulas.md §7).
//
//   ml::PartialFCSampler pfc(C, 0.1, seed);
//   const ml::ActiveSet& a = pfc.sample(labels);    // positives + uniform negatives
//   loss = ml::forward_backward(policy, X, W, a, {dX, dW}, sws, opts);
//
// Each step keeps every positive class (the batch's distinct labels) and draws negatives
// uniformly without replacement from the other classes until the set has quota = round(r C)
// classes (at least 1, at most C); when the positives alone reach the quota, the set is the
// positives only. So |A| = max(|positives|, round(r C)). r = 0.1 is the paper's setting (its
// WebFace42M configurations use 0.2-0.3); insightface truncates, int(r C), where this rounds.
// The classes come sorted ascending, as insightface's index list, and the labels are
// re-indexed into them. Negatives are drawn by a partial Fisher-Yates shuffle of a persistent
// permutation (O(|A|) per step after the first, O(C) memory) with the library's xoshiro256**:
// the same seed gives the same sets on every platform.
//
// Optimiser state (docs/references.md §15.5). insightface's first Partial FC ("V1") swapped
// the sampled rows and their momentum into the optimiser each step: un-sampled rows saw no
// update at all -- no momentum, no weight decay. PartialFC_V2 indexes a full-size parameter,
// so the gradient is scattered into a full C x D matrix with zero rows elsewhere and the
// optimiser, with full-size state, keeps applying momentum and weight decay to every row.
// The subset forward_backward() writes the sampled rows of dW and leaves the others untouched
// (or zeroes them with SubsetOptions::zero_inactive_rows). For V2 behaviour, zero them and
// step the whole matrix; for V1 behaviour, step only the rows in ActiveSet::classes (with
// their own momentum rows) and leave the rest of W and of the optimiser state alone.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../detail/validate.hpp"
#include "../errors.hpp"
#include "../types.hpp"
#include "random.hpp"
#include "subset.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// Partial FC class sampling (An et al., insightface; docs/formulas.md §7): each step keeps the
/// batch's distinct labels and draws uniform negatives without replacement until the set has
/// quota() = round(r C) classes, so |A| = max(|positives|, round(r C)). The classes come sorted
/// ascending, with the labels re-indexed into them.
class PartialFCSampler {
 public:
  /// Over classes [0, num_classes) with sample rate r in (0, 1] (0.1: the paper's setting).
  PartialFCSampler(Index num_classes, double sample_rate = 0.1, std::uint64_t seed = 0)
      : C_(num_classes), r_(sample_rate), rng_(seed) {
    if (num_classes < 1) detail::fail("PartialFCSampler: num_classes = ", num_classes, " must be >= 1");
    if (!(sample_rate > 0 && sample_rate <= 1))
      detail::fail("PartialFCSampler: sample_rate = ", sample_rate, " must be in (0, 1]");
    const double q = std::round(sample_rate * static_cast<double>(num_classes));
    quota_ = std::min(num_classes, std::max<Index>(1, static_cast<Index>(q)));
    pool_.resize(static_cast<std::size_t>(C_));
    pos_.resize(static_cast<std::size_t>(C_));
    for (Index j = 0; j < C_; ++j) pool_[static_cast<std::size_t>(j)] = pos_[static_cast<std::size_t>(j)] = j;
  }

  Index num_classes() const { return C_; }  ///< C
  double sample_rate() const { return r_; }  ///< r
  Index quota() const { return quota_; }  ///< round(r C), in [1, C]
  /// Restarts the generator; the permutation the negatives are drawn from is kept, so the sets
  /// depend on the seed and on the steps before it.
  void reseed(std::uint64_t seed) { rng_.reseed(seed); }

  /// The active set of a batch (positives + uniform negatives), held by the sampler until the
  /// next call.
  template <typename DL>
  const ActiveSet& sample(const Eigen::MatrixBase<DL>& labels) {
    sample(labels, set_);
    return set_;
  }

  /// The same into a caller-owned ActiveSet.
  template <typename DL>
  void sample(const Eigen::MatrixBase<DL>& labels, ActiveSet& out) {
    detail::check_label_vector<DL>();
    const Index B = labels.size();
    if (B == 0) detail::fail("PartialFCSampler: labels is empty");
    detail::copy_labels(labels, C_, y_);
    // Positives to the front of the pool, in order of first appearance.
    Index P = 0;
    for (Index i = 0; i < B; ++i) {
      const Index y = y_(i);
      if (pos_[static_cast<std::size_t>(y)] < P) continue;  // already a positive of this step
      swap_to(P++, pos_[static_cast<std::size_t>(y)]);
    }
    const Index total = std::max(P, quota_);
    for (Index t = P; t < total; ++t)
      swap_to(t, t + static_cast<Index>(rng_.below(static_cast<std::uint64_t>(C_ - t))));
    out.classes.resize(total);
    for (Index a = 0; a < total; ++a) out.classes(a) = pool_[static_cast<std::size_t>(a)];
    std::sort(out.classes.data(), out.classes.data() + total);
    out.local_labels.resize(B);
    for (Index i = 0; i < B; ++i)
      out.local_labels(i) = std::lower_bound(out.classes.data(), out.classes.data() + total, y_(i)) - out.classes.data();
  }

 private:
  void swap_to(Index a, Index b) {
    const Index ca = pool_[static_cast<std::size_t>(a)], cb = pool_[static_cast<std::size_t>(b)];
    pool_[static_cast<std::size_t>(a)] = cb;
    pool_[static_cast<std::size_t>(b)] = ca;
    pos_[static_cast<std::size_t>(cb)] = a;
    pos_[static_cast<std::size_t>(ca)] = b;
  }

  Index C_, quota_ = 1;
  double r_;
  Xoshiro256 rng_;
  std::vector<Index> pool_, pos_;  // a permutation of the classes and its inverse
  Eigen::Matrix<Index, Eigen::Dynamic, 1> y_;
  ActiveSet set_;
};

MARGINLOSS_NAMESPACE_END
