#include "evaluate.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

namespace glyphs {

OpenSet verify(const Mat& embeddings, const std::vector<int>& labels, std::size_t max_impostors,
               std::uint64_t pair_seed) {
  constexpr double kDeg = 180.0 / 3.14159265358979323846;
  Mat E = embeddings;
  for (Eigen::Index i = 0; i < E.rows(); ++i) {
    const float n = E.row(i).norm();
    if (n > 0) E.row(i) /= n;
  }
  const std::size_t N = labels.size();
  std::map<int, std::vector<Eigen::Index>> by_label;
  for (std::size_t i = 0; i < N; ++i) by_label[labels[i]].push_back(static_cast<Eigen::Index>(i));
  std::vector<float> pos, neg;
  double intra = 0, inter = 0;
  for (const auto& [label, rows] : by_label)
    for (std::size_t a = 0; a < rows.size(); ++a)
      for (std::size_t b = a + 1; b < rows.size(); ++b) {
        const float c = std::clamp(E.row(rows[a]).dot(E.row(rows[b])), -1.f, 1.f);
        pos.push_back(c);
        intra += std::acos(static_cast<double>(c)) * kDeg;
      }
  // Impostors: every pair of different labels when there are few, else a fixed sample.
  double all_pairs = 0;
  for (const auto& [label, rows] : by_label) all_pairs += static_cast<double>(rows.size()) * static_cast<double>(N - rows.size());
  all_pairs /= 2;
  if (all_pairs <= static_cast<double>(max_impostors)) {
    for (std::size_t i = 0; i < N; ++i)
      for (std::size_t j = i + 1; j < N; ++j)
        if (labels[i] != labels[j]) neg.push_back(std::clamp(E.row(static_cast<Eigen::Index>(i)).dot(E.row(static_cast<Eigen::Index>(j))), -1.f, 1.f));
  } else {
    std::mt19937_64 rng(pair_seed);
    std::uniform_int_distribution<std::size_t> pick(0, N - 1);
    neg.reserve(max_impostors);
    while (neg.size() < max_impostors) {
      const std::size_t i = pick(rng), j = pick(rng);
      if (labels[i] == labels[j]) continue;
      neg.push_back(std::clamp(E.row(static_cast<Eigen::Index>(i)).dot(E.row(static_cast<Eigen::Index>(j))), -1.f, 1.f));
    }
  }
  for (float c : neg) inter += std::acos(static_cast<double>(c)) * kDeg;
  OpenSet r;
  if (!pos.empty()) r.intra_deg = intra / static_cast<double>(pos.size());
  if (!neg.empty()) r.inter_deg = inter / static_cast<double>(neg.size());
  r.v = marginloss_examples::verify_scores(pos, neg);
  r.tar_1e2 = marginloss_examples::tar_at_far(pos, neg, 1e-2);
  r.tar_1e3 = marginloss_examples::tar_at_far(pos, neg, 1e-3);
  r.tar_1e4 = marginloss_examples::tar_at_far(pos, neg, 1e-4);
  return r;
}

double closed_set_accuracy(const Head& head, const Mat& embeddings, const Mat& W, const std::vector<int>& labels) {
  if (labels.empty()) return 0;
  long hits = 0;
  for (Eigen::Index first = 0; first < embeddings.rows(); first += 1024) {
    const Eigen::Index n = std::min<Eigen::Index>(1024, embeddings.rows() - first);
    const Mat s = head.scores(embeddings.middleRows(first, n), W);
    for (Eigen::Index i = 0; i < n; ++i) {
      Eigen::Index arg;
      s.row(i).maxCoeff(&arg);
      hits += arg == labels[static_cast<std::size_t>(first + i)];
    }
  }
  return static_cast<double>(hits) / static_cast<double>(labels.size());
}

}  // namespace glyphs
