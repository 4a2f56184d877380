// Verification metrics of the examples, from genuine (same class) and impostor (different
// class) pair scores: ROC AUC, TAR at fixed FARs, the ROC curve on a log grid of FARs.
//
//   AUC = P(genuine > impostor) + P(genuine == impostor) / 2         (Mann-Whitney)
//   TAR(f): the threshold t is the (k+1)-th largest impostor score, k = floor(f * #impostors),
//           so at most k impostors score above it; TAR = #{genuine > t} / #genuine.
//
// Header-only; no dependency besides the standard library.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace marginloss_examples {

struct Verification {
  double auc = 0;
  std::vector<double> far_grid, tar_grid;  // ROC on a log grid of FARs (10^-6 .. 1)
  std::size_t genuine = 0, impostor = 0;
};

// Both lists are sorted in place.
inline double tar_at_far(const std::vector<float>& pos_sorted, const std::vector<float>& neg_sorted, double far) {
  if (pos_sorted.empty() || neg_sorted.empty()) return 0.0;
  const std::size_t k = static_cast<std::size_t>(std::floor(far * static_cast<double>(neg_sorted.size())));
  if (k >= neg_sorted.size()) return 1.0;
  const float threshold = neg_sorted[neg_sorted.size() - 1 - k];
  const auto above = pos_sorted.end() - std::upper_bound(pos_sorted.begin(), pos_sorted.end(), threshold);
  return static_cast<double>(above) / static_cast<double>(pos_sorted.size());
}

inline double roc_auc(const std::vector<float>& pos_sorted, const std::vector<float>& neg_sorted) {
  if (pos_sorted.empty() || neg_sorted.empty()) return 0.0;
  double below = 0;
  std::size_t lo = 0, hi = 0;
  for (float p : pos_sorted) {
    while (lo < neg_sorted.size() && neg_sorted[lo] < p) ++lo;
    if (hi < lo) hi = lo;
    while (hi < neg_sorted.size() && neg_sorted[hi] <= p) ++hi;
    below += static_cast<double>(lo) + 0.5 * static_cast<double>(hi - lo);
  }
  return below / (static_cast<double>(pos_sorted.size()) * static_cast<double>(neg_sorted.size()));
}

// Sorts pos and neg and computes everything.
inline Verification verify_scores(std::vector<float>& pos, std::vector<float>& neg) {
  std::sort(pos.begin(), pos.end());
  std::sort(neg.begin(), neg.end());
  Verification v;
  v.genuine = pos.size();
  v.impostor = neg.size();
  v.auc = roc_auc(pos, neg);
  for (int k = 0; k <= 120; ++k) {
    const double far = std::pow(10.0, -6.0 + 6.0 * k / 120.0);
    v.far_grid.push_back(far);
    v.tar_grid.push_back(tar_at_far(pos, neg, far));
  }
  return v;
}

}  // namespace marginloss_examples
