// Must not compile: AdaptiveMargin built from an Eigen expression (Constant() has no storage to
// view): evaluate it into a named vector first.
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
int main() {
  ml::RowMatrix<float> X(4, 8), W(10, 8), dX(4, 8), dW(10, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Vector<float> dm(10);
  ml::Workspace<float> ws;
  const ml::AdaptiveMargin<float> p{30, ml::Vector<float>::Constant(10, 0.3f)};
  return static_cast<int>(ml::forward_backward(p, X, W, y, {dX, dW, dm}, ws));
}
