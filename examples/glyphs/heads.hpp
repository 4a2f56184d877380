// Classification heads of the glyph demo: each turns a batch of embeddings X (B x D), the class
// weights W (C x D) and the labels into the loss and dL/dX, dL/dW. Every margin head calls
// marginloss through its public API only (ml::forward_backward, on all classes or on an
// ActiveSet, and the sampling helpers). Hyper-parameters are the papers' published values (README.md).
#pragma once
#include <marginloss/marginloss.hpp>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "network.hpp"

namespace glyphs {

namespace ml = marginloss;

struct HeadConfig {
  std::string loss;          // softmax, normface, cosface, arcface, sphereface, combined, svsoftmax,
                             // mvsoftmax, curricularface, ammsoftmax, adaptiveface
  bool arc_straight = true;  // ArcFace/CurricularFace/combined: straight-through margin gradient
  bool sphere_fixed = false; // SphereFace: fixed scale s instead of the feature norm
  float s = 0.f;             // > 0: overrides the policy's published scale
  float m = -1.f;            // >= 0: overrides the policy's published margin
};

class Head {
 public:
  virtual ~Head() = default;
  // Loss of the batch; writes dX (B x D) and dW (C x D).
  virtual float forward_backward(const Mat& X, const Mat& W, const Eigen::VectorXi& y, Mat& dX, Mat& dW) = 0;
  // Scores of X against every class, for the training accuracy and closed-set accuracy:
  // cosines for the normalised heads, logits (with bias) for softmax.
  virtual Mat scores(const Mat& X, const Mat& W) const;
  // After the optimiser step of the network and W (the head's own parameters).
  virtual void after_step(float /*lr*/, float /*momentum*/) {}
  // AdaptiveFace draws its batches by Adaptive Data Sampling.
  virtual bool adaptive_sampling() const { return false; }
  // One line of its hyper-parameters.
  virtual std::string describe() const = 0;
  // Printed after training (learned margins...); empty if none.
  virtual std::string summary() const { return {}; }
};

// num_classes is needed by the heads with per-class state (softmax bias, AdaptiveFace margins).
std::unique_ptr<Head> make_head(const HeadConfig& cfg, int num_classes, int steps_per_epoch);

// The loss names in table order: the five of the default run, then the others (--all).
const std::vector<std::string>& default_losses();
const std::vector<std::string>& all_losses();

}  // namespace glyphs
