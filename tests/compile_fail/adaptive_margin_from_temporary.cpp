// Must not compile: AdaptiveMargin built from a temporary vector. The policy holds a view
// (ClassValues) of the caller's margins; the temporary would be destroyed at the end of the
// declaration and the view would dangle.
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
ml::Vector<float> initial_margins(ml::Index C) { return ml::Vector<float>::Constant(C, 0.3f); }
int main() {
  ml::RowMatrix<float> X(4, 8), W(10, 8), dX(4, 8), dW(10, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Vector<float> dm(10);
  ml::Workspace<float> ws;
  const ml::AdaptiveMargin<float> p{30, initial_margins(10)};
  return static_cast<int>(ml::forward_backward(p, X, W, y, {dX, dW, dm}, ws));
}
