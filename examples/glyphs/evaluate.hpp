// Evaluation of a trained embedding: open-set verification by the cosine of two embeddings
// (all genuine pairs; impostor pairs all, or a fixed random sample when there are more than
// `max_impostors`, the same sample for every loss), and closed-set accuracy.
#pragma once
#include <cstdint>
#include <vector>

#include "../common/verification.hpp"
#include "heads.hpp"
#include "network.hpp"

namespace glyphs {

struct OpenSet {
  marginloss_examples::Verification v;
  double tar_1e2 = 0, tar_1e3 = 0, tar_1e4 = 0;
  double intra_deg = 0, inter_deg = 0;  // mean angle of genuine / impostor pairs
};

OpenSet verify(const Mat& embeddings, const std::vector<int>& labels, std::size_t max_impostors,
               std::uint64_t pair_seed);

// Fraction of rows whose highest score (head->scores against W) is their label.
double closed_set_accuracy(const Head& head, const Mat& embeddings, const Mat& W, const std::vector<int>& labels);

}  // namespace glyphs
