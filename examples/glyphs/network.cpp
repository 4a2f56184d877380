#include "network.hpp"

#include <algorithm>
#include <cmath>

namespace glyphs {

Mlp::Mlp(int in, int hidden, int dim, std::mt19937& rng)
    : W1(in, hidden, true), b1(1, hidden, false), W2(hidden, dim, true), b2(1, dim, false) {
  W1.init_normal(rng, std::sqrt(2.f / static_cast<float>(in)));      // He
  W2.init_normal(rng, std::sqrt(1.f / static_cast<float>(hidden)));  // LeCun
}

void Mlp::forward(const Mat& A, Mat& X) {
  H.resize(A.rows(), W1.value.cols());
  H.noalias() = A * W1.value;
  H.rowwise() += b1.value.row(0);
  R = H.cwiseMax(0.f);
  X.resize(A.rows(), W2.value.cols());
  X.noalias() = R * W2.value;
  X.rowwise() += b2.value.row(0);
}

void Mlp::backward(const Mat& A, const Mat& dX) {
  W2.grad.noalias() = R.transpose() * dX;
  b2.grad = dX.colwise().sum();
  dR.resize(dX.rows(), W2.value.rows());
  dR.noalias() = dX * W2.value.transpose();
  dR = (H.array() > 0.f).select(dR, 0.f);
  W1.grad.noalias() = A.transpose() * dR;
  b1.grad = dR.colwise().sum();
}

void Mlp::step(float lr, float momentum, float wd) {
  for (Param* p : {&W1, &b1, &W2, &b2}) p->step(lr, momentum, wd);
}

Mat Mlp::embed(const Mat& A) {
  Mat out(A.rows(), dim());
  Mat h, x;
  for (Eigen::Index first = 0; first < A.rows(); first += 512) {
    const Eigen::Index n = std::min<Eigen::Index>(512, A.rows() - first);
    h.noalias() = A.middleRows(first, n) * W1.value;
    h.rowwise() += b1.value.row(0);
    h = h.cwiseMax(0.f);
    x.noalias() = h * W2.value;
    x.rowwise() += b2.value.row(0);
    out.middleRows(first, n) = x;
  }
  return out;
}

}  // namespace glyphs
