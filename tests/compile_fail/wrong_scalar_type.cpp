// Must not compile: double data with a float policy. The library's static_assert comes first.
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
int main() {
  ml::RowMatrix<double> X(4, 8), W(10, 8), dX(4, 8), dW(10, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Workspace<double> ws;
  return static_cast<int>(ml::forward_backward(ml::ArcFace<float>{}, X, W, y, {dX, dW}, ws));
}
