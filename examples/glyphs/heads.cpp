#include "heads.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <type_traits>

#include <marginloss/sampling/hard_prototype_miner.hpp>
#include <marginloss/sampling/subset.hpp>

namespace glyphs {
namespace {

std::string fmt(const char* f, double a = 0, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c, d);
  return buf;
}

Mat normalised_rows(const Mat& M) {
  Mat out = M;
  for (Eigen::Index i = 0; i < out.rows(); ++i) {
    const float n = out.row(i).norm();
    if (n > 0) out.row(i) /= n;
  }
  return out;
}

// Plain softmax cross-entropy of a linear classifier with bias, logits = X W^T + b.
class SoftmaxHead final : public Head {
 public:
  explicit SoftmaxHead(int classes) : b_(1, classes, false) {}
  float forward_backward(const Mat& X, const Mat& W, const Eigen::VectorXi& y, Mat& dX, Mat& dW) override {
    const Eigen::Index B = X.rows();
    logits_.noalias() = X * W.transpose();
    logits_.rowwise() += b_.value.row(0);
    double total = 0;
    for (Eigen::Index i = 0; i < B; ++i) {
      auto z = logits_.row(i);
      const float zmax = z.maxCoeff();
      z.array() = (z.array() - zmax).exp();
      const float sum = z.sum();
      total += std::log(static_cast<double>(sum)) - std::log(static_cast<double>(z(y(i))));
      z /= sum * static_cast<float>(B);
      z(y(i)) -= 1.f / static_cast<float>(B);
    }
    dX.noalias() = logits_ * W;
    dW.noalias() = logits_.transpose() * X;
    b_.grad = logits_.colwise().sum();
    return static_cast<float>(total / static_cast<double>(B));
  }
  Mat scores(const Mat& X, const Mat& W) const override {
    Mat s = X * W.transpose();
    s.rowwise() += b_.value.row(0);
    return s;
  }
  void after_step(float lr, float momentum) override { b_.step(lr, momentum, 0.f); }
  std::string describe() const override { return "softmax: linear classifier with bias"; }

 private:
  Param b_;
  Mat logits_;
};

// Any marginloss policy through ml::forward_backward (which updates CurricularFace's tau from
// each batch's target cosines before use, as the official code); SphereFace's lambda is annealed
// before every step.
template <typename Policy>
class MarginHead final : public Head {
 public:
  MarginHead(Policy p, std::string text) : policy_(p), text_(std::move(text)) {}
  float forward_backward(const Mat& X, const Mat& W, const Eigen::VectorXi& y, Mat& dX, Mat& dW) override {
    if constexpr (std::is_same_v<Policy, ml::SphereFace<float>>)
      policy_.lambda = static_cast<float>(schedule_.step());
    return ml::forward_backward(policy_, X, W, y, {dX, dW}, ws_);
  }
  std::string describe() const override { return text_; }
  std::string summary() const override {
    if constexpr (std::is_same_v<Policy, ml::SphereFace<float>>)
      return fmt("final lambda %.2f", static_cast<double>(policy_.lambda));
    if constexpr (std::is_same_v<Policy, ml::CurricularFace<float>>)
      return fmt("final tau %.3f", static_cast<double>(policy_.tau));
    return {};
  }

 private:
  Policy policy_;
  std::string text_;
  ml::Workspace<float> ws_;
  ml::LambdaSchedule schedule_;
};

// AdaptiveFace (Liu et al., CVPR 2019): AdaM-Softmax (one learnable margin per class, dL/dm from
// the library, SGD with momentum at the network's learning rate, projected to [0, 1]) on the
// classes chosen by Hard Prototype Mining (the batch's classes and their queues of hard
// classes), with Adaptive Data Sampling of the batches (train.cpp).
class AdaptiveHead final : public Head {
 public:
  AdaptiveHead(int classes, float s, float m0)
      : margins_(ml::Vector<float>::Constant(classes, m0)),
        dm_(ml::Vector<float>::Zero(classes)),
        velocity_(ml::Vector<float>::Zero(classes)),
        hpm_(hpm_options()) {
    if (s > 0) s_ = s;
    sopt_.regulariser = ml::SubsetRegulariser::active_classes;
    sopt_.keep_cosines = true;  // the miner's queue rule reads the loss's cosines
  }
  float forward_backward(const Mat& X, const Mat& W, const Eigen::VectorXi& y, Mat& dX, Mat& dW) override {
    if (!built_) {
      hpm_.build(W);
      built_ = true;
    }
    hpm_.step(W);
    const ml::ActiveSet& a = hpm_.active_set(y);
    dm_.setZero();
    dW.setZero();
    const float loss = ml::forward_backward(policy(), X, W, a, {dX, dW, dm_}, sws_, sopt_);
    hpm_.update(sws_, W, a);
    active_ += static_cast<double>(a.size());
    ++steps_;
    return loss;
  }
  void after_step(float lr, float momentum) override {
    velocity_ = momentum * velocity_ + dm_;
    margins_ -= lr * velocity_;  // in place: the next policy() views the updated values
    ml::project_margins(margins_);
  }
  bool adaptive_sampling() const override { return true; }
  std::string describe() const override {
    return fmt("AdaptiveFace s=%g, margins from %g, lambda_m=%g, HPM k=10, ADS", static_cast<double>(s_),
               static_cast<double>(margins_.size() ? margins_(0) : 0.f), static_cast<double>(lambda_m_));
  }
  std::string summary() const override {
    return fmt("margins mean %.3f min %.3f max %.3f, mean active classes %.0f", margins_.mean(), margins_.minCoeff(),
               margins_.maxCoeff(), steps_ ? active_ / steps_ : 0.0);
  }

 private:
  static ml::HardPrototypeMinerOptions hpm_options() {
    ml::HardPrototypeMinerOptions o;
    o.k = 10;
    o.refresh_every = 500;
    return o;
  }
  // The head owns the margins (updated in place by after_step) and builds the policy as a view
  // of them for each call.
  ml::AdaptiveMargin<float> policy() const { return {s_, margins_, lambda_m_}; }
  float s_ = ml::AdaptiveMargin<float>{}.s, lambda_m_ = ml::AdaptiveMargin<float>{}.lambda_m;
  ml::Vector<float> margins_, dm_, velocity_;
  ml::HardPrototypeMiner<float> hpm_;
  ml::SubsetWorkspace<float> sws_;
  ml::SubsetOptions sopt_;
  bool built_ = false;
  double active_ = 0, steps_ = 0;
};

template <typename P>
void apply_sm(P& p, const HeadConfig& c) {
  if (c.s > 0) p.s = c.s;
  if constexpr (!std::is_same_v<P, ml::NormFace<float>>)
    if (c.m >= 0) p.m = c.m;
}

}  // namespace

Mat Head::scores(const Mat& X, const Mat& W) const { return X * normalised_rows(W).transpose(); }

const std::vector<std::string>& default_losses() {
  static const std::vector<std::string> v{"softmax", "normface", "cosface", "arcface", "sphereface"};
  return v;
}
const std::vector<std::string>& all_losses() {
  static const std::vector<std::string> v{"softmax",   "normface",  "cosface",        "arcface",
                                          "sphereface", "combined", "svsoftmax",      "mvsoftmax",
                                          "curricularface", "ammsoftmax", "adaptiveface"};
  return v;
}

std::unique_ptr<Head> make_head(const HeadConfig& c, int num_classes, int /*steps_per_epoch*/) {
  const auto grad = c.arc_straight ? ml::Gradient::straight_through : ml::Gradient::exact;
  const char* gname = c.arc_straight ? "straight-through" : "exact";
  if (c.loss == "softmax") return std::make_unique<SoftmaxHead>(num_classes);
  if (c.loss == "normface") {
    ml::NormFace<float> p;
    apply_sm(p, c);
    return std::make_unique<MarginHead<ml::NormFace<float>>>(p, fmt("NormFace s=%g", double(p.s)));
  }
  if (c.loss == "cosface") {
    ml::CosFace<float> p;
    apply_sm(p, c);
    return std::make_unique<MarginHead<ml::CosFace<float>>>(p, fmt("CosFace s=%g m=%g", double(p.s), double(p.m)));
  }
  if (c.loss == "arcface") {
    ml::ArcFace<float> p;
    apply_sm(p, c);
    p.gradient = grad;
    return std::make_unique<MarginHead<ml::ArcFace<float>>>(
        p, fmt("ArcFace s=%g m=%g, ", double(p.s), double(p.m)) + gname + " gradient");
  }
  if (c.loss == "sphereface") {
    ml::SphereFace<float> p;
    p.lambda = 1000.f;
    if (c.sphere_fixed) {
      p.scale_mode = ml::Scale::fixed;
      if (c.s > 0) p.s = c.s;
    }
    std::string text = fmt("SphereFace m=%g, lambda 1000 -> 5 (gamma 0.12), ", p.m);
    text += c.sphere_fixed ? fmt("fixed scale s=%g", double(p.s)) : std::string("feature-norm scale");
    return std::make_unique<MarginHead<ml::SphereFace<float>>>(p, text);
  }
  if (c.loss == "combined") {
    ml::CombinedMargin<float> p;
    if (c.s > 0) p.s = c.s;
    p.gradient = grad;
    return std::make_unique<MarginHead<ml::CombinedMargin<float>>>(
        p, fmt("combined margin s=%g m1=%g m2=%g m3=%g, ", double(p.s), double(p.m1), double(p.m2), double(p.m3)) +
               gname + " gradient");
  }
  if (c.loss == "svsoftmax") {
    ml::SVSoftmax<float> p;
    if (c.s > 0) p.s = c.s;
    return std::make_unique<MarginHead<ml::SVSoftmax<float>>>(p, fmt("SV-Softmax s=%g m=0 t=%g", double(p.s), double(p.t)));
  }
  if (c.loss == "mvsoftmax") {
    ml::MVSoftmax<float> p;
    apply_sm(p, c);
    return std::make_unique<MarginHead<ml::MVSoftmax<float>>>(
        p, fmt("MV-AM-Softmax (adaptive) s=%g m=%g t=%g", double(p.s), double(p.m), double(p.t)));
  }
  if (c.loss == "curricularface") {
    ml::CurricularFace<float> p;
    apply_sm(p, c);
    return std::make_unique<MarginHead<ml::CurricularFace<float>>>(
        p, fmt("CurricularFace s=%g m=%g", double(p.s), double(p.m)));
  }
  if (c.loss == "ammsoftmax") {
    ml::AMMSoftmax<float> p;
    apply_sm(p, c);
    return std::make_unique<MarginHead<ml::AMMSoftmax<float>>>(
        p, fmt("AMM-Softmax s=%g m=%g m_h=%g", double(p.s), double(p.m), double(p.m_h)));
  }
  if (c.loss == "adaptiveface") return std::make_unique<AdaptiveHead>(num_classes, c.s, c.m >= 0 ? c.m : 0.35f);
  throw std::invalid_argument("unknown loss '" + c.loss + "'");
}

}  // namespace glyphs
