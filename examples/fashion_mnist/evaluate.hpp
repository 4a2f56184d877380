// Evaluation of a trained model: open-set verification of the held-out classes by the cosine of
// two embeddings (all pairs; metrics from examples/common/verification.hpp), closed-set accuracy
// on the training classes, and the span(W) diagnostic (--span).
#pragma once
#include <chrono>
#include <string>
#include <vector>

#include "../common/verification.hpp"
#include "data.hpp"
#include "train.hpp"
#include "types.hpp"

namespace fashion_mnist {

// Rows scaled to unit norm (zero rows left as they are).
Mat normalise_rows(const Mat& M);

struct OpenSet {
  marginloss_examples::Verification v;  // AUC and the ROC curve on a log grid of FARs
  double tar_1e2 = 0, tar_1e3 = 0;
  double intra_deg = 0, inter_deg = 0;  // mean angle of genuine / impostor pairs
};

// All pairs i < j of the embeddings: genuine (same class) and impostor scores by cosine. With no
// genuine or no impostor pair everything is 0 and the ROC curve empty.
OpenSet verify(const Mat& emb, const Eigen::VectorXi& label);

// Closed-set accuracy: argmax of the cosine to the class weights (logits for softmax).
double closed_set_accuracy(const Mat& emb, const Mat& W, const Eigen::VectorXi& label, bool cosine);

// --span: where the held-out embeddings' verification power lives. The embedding space splits
// into span(W) (the C class-weight directions, all the loss sees) and its orthogonal
// complement; each part is verified on its own, and the complement's share of the energy is
// printed.
void print_span_diagnostic(const char* loss, const Mat& emb, const Mat& W, const Eigen::VectorXi& label);

struct Row {
  std::string loss;
  OpenSet open;
  double closed_acc = 0;
  double seconds = 0;  // training and evaluation, from t0
};

// Verification on `open_set` and closed-set accuracy on `closed_test` of one trained model,
// printed as one line (after the span diagnostic when `span`).
Row evaluate(const std::string& loss, Trained& t, std::chrono::steady_clock::time_point t0, const Subset& open_set,
             const Subset& closed_test, bool span);

}  // namespace fashion_mnist
