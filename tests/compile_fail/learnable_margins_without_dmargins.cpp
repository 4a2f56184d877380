// Must not compile: AdaptiveMargin through an entry point without a dmargins output (the
// margins would never get a gradient).
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
int main() {
  ml::RowMatrix<float> X(4, 8), W(10, 8), dX(4, 8), dW(10, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Workspace<float> ws;
  const ml::Vector<float> margins = ml::Vector<float>::Constant(10, 0.3f);
  const ml::AdaptiveMargin<float> p{30, margins};
  return static_cast<int>(ml::forward_backward(p, X, W, y, dX, dW, ws));
}
