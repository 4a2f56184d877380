// Must not compile: a DeviceCommunicator (it has stream(): its all-reduces take device memory)
// passed to the CPU's sharded entry point. The library's static_assert comes first.
#include <marginloss/distributed/sharded.hpp>
#include <marginloss/marginloss.hpp>
namespace ml = marginloss;
struct DeviceLike {
  int rank() const { return 0; }
  int size() const { return 2; }
  void* stream() const { return nullptr; }
  template <typename T>
  void allreduce_max(T*, ml::Index) {}
  template <typename T>
  void allreduce_sum(T*, ml::Index) {}
  void host_allreduce_sum(double*, ml::Index) {}
};
int main() {
  ml::RowMatrix<float> X(4, 8), W(5, 8), dX(4, 8), dW(5, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Workspace<float> ws;
  DeviceLike comm;
  return static_cast<int>(ml::forward_backward(ml::ArcFace<float>{}, X, W, y, {dX, dW}, ws, ml::Shard{0, 10, comm}));
}
