// Must not compile: a view whose rows are not contiguous (inner stride), which would be read
// wrongly (target_cosines) or copied on every call (the loss).
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
int main() {
  float b[8] = {1, 0, 0, 0, 1, 0, 0, 0};
  Eigen::Map<const ml::RowMatrix<float>, 0, Eigen::Stride<-1, -1>> X(b, 1, 2, Eigen::Stride<-1, -1>(4, 2));
  ml::RowMatrix<float> W(1, 2);
  W << 1, 0;
  Eigen::VectorXi y = Eigen::VectorXi::Zero(1);
  return static_cast<int>(ml::target_cosines(X, W, y)(0));
}
