#include "heads.hpp"

#include <cstdio>

namespace fashion_mnist {

float SoftmaxHead::operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX,
                              Mat& dW) {
  const Eigen::Index B = X.rows(), C = W.rows();
  logits.resize(B, C);
  logits.noalias() = X * W.transpose();
  double total = 0;
  for (Eigen::Index i = 0; i < B; ++i) {
    auto z = logits.row(i);
    const float zmax = z.maxCoeff();
    z.array() = (z.array() - zmax).exp();
    const float sum = z.sum();
    total += std::log(static_cast<double>(sum)) - (std::log(static_cast<double>(z(y(i)))));
    z /= sum * static_cast<float>(B);
    z(y(i)) -= 1.f / static_cast<float>(B);
  }
  dX.noalias() = logits * W;
  dW.noalias() = logits.transpose() * X;
  return static_cast<float>(total / static_cast<double>(B));
}

AdaptiveHead::AdaptiveHead(float s_, float m0, float lambda_m_, int classes)
    : s(s_),
      lambda_m(lambda_m_),
      margins(ml::Vector<float>::Constant(classes, m0)),
      dm(ml::Vector<float>::Zero(classes)),
      velocity(ml::Vector<float>::Zero(classes)) {}

float AdaptiveHead::operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX,
                               Mat& dW) {
  return ml::forward_backward(policy(), X, W, y, {dX, dW, dm}, ws);
}

void AdaptiveHead::after_step(float lr) {
  velocity = 0.9f * velocity + dm;
  margins -= lr * velocity;  // in place: the next policy() views the updated values
  ml::project_margins(margins);
}

std::string AdaptiveHead::summary() const {
  std::string out = "learned margins:";
  char buf[16];
  for (Eigen::Index k = 0; k < margins.size(); ++k) {
    std::snprintf(buf, sizeof buf, " %.3f", static_cast<double>(margins(k)));
    out += buf;
  }
  return out;
}

}  // namespace fashion_mnist
