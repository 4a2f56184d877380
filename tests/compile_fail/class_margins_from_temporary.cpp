// Must not compile: class_margins() given a temporary (the LDAM margins straight from
// margins_from_class_counts): the policy would view a vector destroyed at the end of the line.
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
int main() {
  ml::RowMatrix<float> X(4, 8), W(10, 8), dX(4, 8), dW(10, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  const Eigen::VectorXi counts = Eigen::VectorXi::Constant(10, 100);
  ml::Workspace<float> ws;
  const auto p = ml::class_margins(ml::CosFace<float>{}, ml::margins_from_class_counts(counts, 0.5f));
  return static_cast<int>(ml::forward_backward(p, X, W, y, {dX, dW}, ws));
}
