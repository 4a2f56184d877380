#include <marginloss/marginloss.hpp>

#include <cmath>
#include <cstdio>

int main() {
  namespace ml = marginloss;
  ml::RowMatrix<float> X = ml::RowMatrix<float>::Random(4, 8), W = ml::RowMatrix<float>::Random(10, 8);
  Eigen::VectorXi y(4);
  y << 1, 3, 5, 7;
  const auto r = ml::forward_backward(ml::ArcFace<float>{64, 0.5f}, X, W, y);
  std::printf("consumer: loss = %.6f\n", r.loss);
  return std::isfinite(r.loss) && r.dX.allFinite() && r.dW.allFinite() ? 0 : 1;
}
