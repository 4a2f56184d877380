// Must not compile: a communicator without allreduce_max. The library's static_assert, naming
// the concept's members, comes first.
#include <marginloss/distributed/sharded.hpp>
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
struct SumOnly {
  int rank() const { return 0; }
  int size() const { return 2; }
  template <typename T>
  void allreduce_sum(T*, ml::Index) {}
};
int main() {
  ml::RowMatrix<float> X(4, 8), W(5, 8), dX(4, 8), dW(5, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Workspace<float> ws;
  SumOnly comm;
  return static_cast<int>(ml::forward_backward(ml::ArcFace<float>{}, X, W, y, {dX, dW}, ws, ml::Shard{0, 10, comm}));
}
