// Must not compile: per-class margins from a strided Eigen view (every other entry of a buffer).
// It has data() and size(), but its values are not consecutive: a ClassValues view of it would
// read the wrong memory.
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
int main() {
  ml::RowMatrix<float> X(4, 8), W(10, 8), dX(4, 8), dW(10, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Workspace<float> ws;
  const ml::Vector<float> buffer = ml::Vector<float>::Constant(20, 0.3f);
  const Eigen::Map<const ml::Vector<float>, 0, Eigen::InnerStride<2>> every_other(buffer.data(), 10);
  const auto p = ml::class_margins(ml::CosFace<float>{}, every_other);
  return static_cast<int>(ml::forward_backward(p, X, W, y, {dX, dW}, ws));
}
