// Losses. Each head turns a batch of embeddings and the class weights W (C x D) into the loss and
// dL/dX, dL/dW. Hooks: before_step() runs before the forward pass, after_step(lr) after the
// optimiser step (AdaptiveFace's margins); with `adaptive_sampling` true the batches are drawn by
// Adaptive Data Sampling (as with --ads for every loss); summary() is printed after training;
// normalised() says whether the loss sees cosines (training accuracy by cosine) or logits.
#pragma once
#include <cmath>
#include <functional>
#include <marginloss/marginloss.hpp>
#include <string>
#include <type_traits>

#include "types.hpp"

namespace fashion_mnist {

struct HeadHooks {
  static constexpr bool adaptive_sampling = false;
  void before_step() {}
  void after_step(float /*lr*/) {}
  std::string summary() const { return {}; }
};

// Plain softmax cross-entropy of a bias-free linear classifier, logits = X W^T: the baseline.
struct SoftmaxHead : HeadHooks {
  Mat logits;  // B x C, overwritten with dL/dlogits
  float operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX, Mat& dW);
  static bool normalised() { return false; }
};

// A policy written in user code through the public contract (policies/common.hpp): CosFace's
// additive cosine margin with either sign, z_iy = s (t - m), z_ij = s c_ij, for the margin sweep
// (--margin-sweep). m = 0 is NormFace and m > 0 is CosFace, the same functions as the library's
// policies; marginloss's CosFace rejects m < 0, the margin Liu et al. ("Negative Margin Matters",
// ECCV 2020) found to transfer better to novel classes.
struct SignedCosineMargin {
  using value_type = float;
  struct row_type {
    ml::ValueSlope<float> target;
  };
  static constexpr bool plain_non_target = true;
  static constexpr const char* name = "SignedCosineMargin";
  float s = 8.f, m = -0.1f;
  void validate() const {
    if (!(s > 0.f) || !std::isfinite(m)) throw ml::invalid_argument("SignedCosineMargin: s must be > 0, m finite");
  }
  row_type row(float t, ml::Index) const { return {{t - m, 1.f}}; }
  ml::ValueSlope<float> non_target(float c, const row_type&) const { return {c, 1.f}; }
  float scale(float) const { return s; }
  bool scale_is_feature_norm() const { return false; }
};
static_assert(ml::is_margin_policy_v<SignedCosineMargin>);

// Any marginloss policy; `on_step` runs before every step (SphereFace's lambda annealing).
template <typename Policy>
struct MarginHead : HeadHooks {
  Policy policy;
  std::function<void(Policy&)> on_step;
  ml::Workspace<float> ws;
  float operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX, Mat& dW) {
    // The forward updates CurricularFace's tau from this batch's target cosines before use
    // (official code), in `policy`.
    return ml::forward_backward(policy, X, W, y, {dX, dW}, ws);
  }
  void before_step() {
    if (on_step) on_step(policy);
  }
  static bool normalised() { return true; }
};

// AdaptiveFace: AdaM-Softmax (ml::AdaptiveMargin, one learnable margin per class, dL/dm from the
// library; SGD with momentum at the network's learning rate, projected to [0, 1] after each step)
// with Adaptive Data Sampling (see train()). Hard Prototype Mining is not used: it restricts the loss to the
// classes nearest to the batch's, and with 7 classes every class is among them.
// The head owns the margins (one per class, updated in place by after_step) and builds the
// policy as a view of them for each call (policy()), so a copied or moved head never views
// another head's margins.
struct AdaptiveHead : HeadHooks {
  static constexpr bool adaptive_sampling = true;
  float s, lambda_m;
  ml::Vector<float> margins, dm, velocity;
  ml::Workspace<float> ws;
  AdaptiveHead(float s, float m0, float lambda_m, int classes);
  ml::AdaptiveMargin<float> policy() const { return {s, margins, lambda_m}; }  // views `margins`
  float operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX, Mat& dW);
  void after_step(float lr);
  std::string summary() const;  // the learned margins
  static bool normalised() { return true; }
};

}  // namespace fashion_mnist
