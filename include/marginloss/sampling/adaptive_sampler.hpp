// marginloss: Adaptive Data Sampling of AdaptiveFace (Liu et al., CVPR 2019; docs/formulas.md §6).
//
//   ml::AdaptiveSampler ads(N, seed);                // N training samples, uniform at first
//   ads.draw(B, batch_indices);                      // the next batch, drawn by the weights
//   ... forward; correct[i] = (arg max_j z_ij == y_i) ...
//   ads.update(batch_indices, correct);              // or with the target cosines (noise rule)
//
// Each sample n has a weight w_n (1 at first) and is drawn with probability
// p_n = w_n / sum_m w_m (the renormalisation is exact: the weights sit in a sum tree, so an
// update of B samples costs O(B log N) and a draw O(log N)). After a step the caller reports
// which samples were classified correctly:
//   correct      -> w_n <- w_n * down     (default 0.8: frequently-correct samples fade)
//   wrong        -> w_n <- w_n * up       (default 1.5)
//   noise        -> w_n <- w_n * noise_factor (default 0.05), when target cosines are given
//                   and t_n < noise_threshold (suspected label noise; default threshold -1,
//                   i.e. off: early in training every cosine is near 0, so enable it -- e.g.
//                   0.0 to 0.2 -- only once the model has converged somewhat)
// and then clamps w_n to [floor, cap] (defaults 0.1 and 10): a sample's weight never falls
// below floor (easy samples are still seen, with probability at least floor/cap of the
// most-likely one's) nor grows without bound. A sample reported twice in one update is
// updated twice. The paper's constants (factors, floor, noise threshold) and even the form of
// the update (multiplicative or additive) were not recovered; the multiplicative rule and
// these defaults are this library's choices.
//
// Draws are WITH replacement (a batch may repeat a sample, with probability ~B^2 max_n p_n / 2;
// negligible when N >> B), so each index follows p exactly. The generator is the library's
// own xoshiro256** and the draw is a descent of the sum tree with one uniform double: the same
// seed gives the same indices on every platform (no implementation-defined std:: distribution).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../errors.hpp"
#include "../types.hpp"
#include "random.hpp"
#include "subset.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// The weight update of AdaptiveSampler (this library's choices: the paper's were not recovered).
struct AdaptiveSamplerOptions {
  double down = 0.8;              ///< factor for a correctly classified sample, in (0, 1]
  double up = 1.5;                ///< factor for a misclassified sample, >= 1
  double floor = 0.1;             ///< lowest weight, > 0
  double cap = 10.0;              ///< highest weight, >= floor, with N * cap finite
  double noise_threshold = -1.0;  ///< target cosine below which a sample is treated as noise (-1: off)
  double noise_factor = 0.05;     ///< factor for a suspected noisy sample, in (0, 1]
};

/// Adaptive Data Sampling of AdaptiveFace (Liu et al., CVPR 2019; docs/formulas.md §6): sample
/// n is drawn with probability p_n = w_n / sum_m w_m, and its weight shrinks when it was
/// classified correctly and grows when not, so training sees the hard samples more often. The
/// weights sit in a sum tree: an update of B samples costs O(B log N), a draw O(log N).
class AdaptiveSampler {
 public:
  /// N = num_samples samples, every weight 1 (uniform draws at first).
  AdaptiveSampler(Index num_samples, std::uint64_t seed = 0, const AdaptiveSamplerOptions& options = {})
      : o_(options), n_(num_samples), rng_(seed) {
    if (num_samples < 1) detail::fail("AdaptiveSampler: num_samples = ", num_samples, " must be >= 1");
    // The sum tree has 2 * leaves entries, leaves the power of two >= N: a larger N cannot be
    // held, and doubling leaves up to it would overflow Index.
    constexpr Index max_samples = std::numeric_limits<Index>::max() / 4 / static_cast<Index>(sizeof(double));
    if (num_samples > max_samples)
      detail::fail("AdaptiveSampler: num_samples = ", num_samples, " must be <= ", max_samples);
    if (!(o_.down > 0 && o_.down <= 1)) detail::fail("AdaptiveSampler: down = ", o_.down, " must be in (0, 1]");
    if (!(o_.up >= 1 && std::isfinite(o_.up))) detail::fail("AdaptiveSampler: up = ", o_.up, " must be finite and >= 1");
    if (!(o_.floor > 0 && std::isfinite(o_.floor))) detail::fail("AdaptiveSampler: floor = ", o_.floor, " must be finite and > 0");
    if (!(o_.cap >= o_.floor && std::isfinite(o_.cap)))
      detail::fail("AdaptiveSampler: cap = ", o_.cap, " must be finite and >= floor = ", o_.floor);
    // The total weight, up to N * cap, must be finite: the draws and probability() divide by it.
    if (!std::isfinite(o_.cap * static_cast<double>(num_samples)))
      detail::fail("AdaptiveSampler: cap = ", o_.cap, " times num_samples = ", num_samples,
                   " overflows the total weight: lower cap");
    if (!(o_.noise_factor > 0 && o_.noise_factor <= 1))
      detail::fail("AdaptiveSampler: noise_factor = ", o_.noise_factor, " must be in (0, 1]");
    if (std::isnan(o_.noise_threshold)) detail::fail("AdaptiveSampler: noise_threshold is NaN");
    leaves_ = 1;
    while (leaves_ < n_) leaves_ *= 2;
    reset_weights();
  }

  const AdaptiveSamplerOptions& options() const { return o_; }  ///< the update's constants
  Index size() const { return n_; }  ///< N, the number of samples
  /// w_n (throws for n outside [0, N)).
  double weight(Index n) const { return tree_[static_cast<std::size_t>(leaves_ + check(n))]; }
  double total_weight() const { return tree_[1]; }  ///< sum_m w_m, the sum tree's root
  /// p_n = w_n / sum_m w_m, the probability that one draw returns n.
  double probability(Index n) const { return weight(n) / total_weight(); }

  /// All weights back to 1.
  void reset_weights() {
    tree_.assign(static_cast<std::size_t>(2 * leaves_), 0.0);
    for (Index n = 0; n < n_; ++n) tree_[static_cast<std::size_t>(leaves_ + n)] = 1.0;
    for (Index p = leaves_ - 1; p >= 1; --p) pull(p);
  }
  /// Restarts the generator of the draws; the weights are kept.
  void reseed(std::uint64_t seed) { rng_.reseed(seed); }
  /// The generator of the draws (e.g. to share one stream or to save its state).
  Xoshiro256& generator() { return rng_; }

  /// Sets w_n (clamped to [floor, cap]), e.g. to restore a checkpoint.
  void set_weight(Index n, double w) {
    if (!std::isfinite(w)) detail::fail("AdaptiveSampler: weight ", w, " must be finite");
    assign(check(n), w);
  }

  /// Feedback of one step: indices[i] was classified correctly iff correct[i] != 0; its weight
  /// is multiplied by `down` or `up` and clamped to [floor, cap]. Every index is checked before
  /// any weight changes.
  template <typename DI, typename DC>
  void update(const Eigen::MatrixBase<DI>& indices, const Eigen::MatrixBase<DC>& correct) {
    if (correct.size() != indices.size())
      detail::fail("AdaptiveSampler: correct has ", correct.size(), " entries but indices has ", indices.size());
    detail::check_label_vector<DI>();
    check_indices(indices);
    for (Index i = 0; i < indices.size(); ++i) {
      const Index n = static_cast<Index>(indices.derived().coeff(i));
      scale(n, correct.derived().coeff(i) ? o_.down : o_.up);
    }
  }

  /// The same with the samples' target cosines t_i: t_i < noise_threshold takes the noise factor.
  template <typename DI, typename DC, typename DT>
  void update(const Eigen::MatrixBase<DI>& indices, const Eigen::MatrixBase<DC>& correct,
              const Eigen::MatrixBase<DT>& target_cosines) {
    if (correct.size() != indices.size())
      detail::fail("AdaptiveSampler: correct has ", correct.size(), " entries but indices has ", indices.size());
    if (target_cosines.size() != indices.size())
      detail::fail("AdaptiveSampler: target_cosines has ", target_cosines.size(), " entries but indices has ", indices.size());
    detail::check_label_vector<DI>();
    check_indices(indices);
    for (Index i = 0; i < indices.size(); ++i) {
      const Index n = static_cast<Index>(indices.derived().coeff(i));
      const double t = static_cast<double>(target_cosines.derived().coeff(i));
      if (t < o_.noise_threshold) scale(n, o_.noise_factor);
      else scale(n, correct.derived().coeff(i) ? o_.down : o_.up);
    }
  }

  /// One index drawn with probability p_n: one uniform double, one descent of the sum tree.
  Index draw_one() {
    double u = rng_.uniform() * tree_[1];
    Index p = 1;
    while (p < leaves_) {
      const double left = tree_[static_cast<std::size_t>(2 * p)];
      if (u < left || tree_[static_cast<std::size_t>(2 * p + 1)] <= 0) {
        p = 2 * p;
      } else {
        u -= left;
        p = 2 * p + 1;
      }
    }
    const Index n = p - leaves_;
    return n < n_ ? n : n_ - 1;
  }

  /// `count` indices drawn independently (with replacement) into `out` (resized).
  void draw(Index count, IndexVector& out) {
    if (count < 0) detail::fail("AdaptiveSampler: count = ", count, " must be >= 0");
    out.resize(count);
    for (Index i = 0; i < count; ++i) out(i) = draw_one();
  }
  /// Allocating form: returns `count` indices drawn independently (with replacement).
  IndexVector draw(Index count) {
    IndexVector out;
    draw(count, out);
    return out;
  }

 private:
  // Every index is checked before any weight changes, so a bad call leaves the weights as
  // they were.
  template <typename DI>
  void check_indices(const Eigen::MatrixBase<DI>& indices) const {
    for (Index i = 0; i < indices.size(); ++i) {
      const auto k = indices.derived().coeff(i);
      if (!detail::index_in_range(k, n_)) detail::fail_index("AdaptiveSampler: indices", i, k, n_);
    }
  }
  Index check(Index n) const {
    if (!(n >= 0 && n < n_)) detail::fail("AdaptiveSampler: sample index ", n, " is out of range [0, ", n_, ")");
    return n;
  }
  void pull(Index p) {
    tree_[static_cast<std::size_t>(p)] = tree_[static_cast<std::size_t>(2 * p)] + tree_[static_cast<std::size_t>(2 * p + 1)];
  }
  void scale(Index n, double factor) { assign(n, tree_[static_cast<std::size_t>(leaves_ + n)] * factor); }
  void assign(Index n, double w) {
    w = w < o_.floor ? o_.floor : (w > o_.cap ? o_.cap : w);
    Index p = leaves_ + n;
    tree_[static_cast<std::size_t>(p)] = w;
    for (p /= 2; p >= 1; p /= 2) pull(p);
  }

  AdaptiveSamplerOptions o_;
  Index n_ = 0, leaves_ = 1;
  std::vector<double> tree_;  // sum tree: leaves at [leaves_, leaves_ + n_), zero padding after
  Xoshiro256 rng_;
};

MARGINLOSS_NAMESPACE_END
