// Must not compile: a column-major dX / dW (it would be copied, and written back nowhere).
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
int main() {
  ml::RowMatrix<float> X(4, 8), W(10, 8);
  Eigen::MatrixXf dX(4, 8), dW(10, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Workspace<float> ws;
  return static_cast<int>(ml::forward_backward(ml::ArcFace<float>{}, X, W, y, {dX, dW}, ws));
}
