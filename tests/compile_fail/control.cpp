// Must compile: the correct forms of the programs next to it.
#include <marginloss/marginloss.hpp>
#include <marginloss/sampling/adaptive_sampler.hpp>
#include <vector>
namespace ml = marginloss;
int main() {
  ml::RowMatrix<float> X = ml::RowMatrix<float>::Random(4, 8), W = ml::RowMatrix<float>::Random(10, 8), dX(4, 8), dW(10, 8);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  ml::Vector<float> dm(10);
  ml::Workspace<float> ws;
  const ml::Vector<float> margins = ml::Vector<float>::Constant(10, 0.3f);  // named: the policy views it
  const ml::AdaptiveMargin<float> p{30, margins};
  const std::vector<float> fixed(10, 0.3f);
  const auto cm = ml::class_margins(ml::ArcFace<float>{}, fixed);
  const float loss =
      ml::forward_backward(p, X, W, y, {dX, dW, dm}, ws) + ml::forward_backward(cm, X, W, y, {dX, dW}, ws);
  ml::AdaptiveSampler s(10);
  Eigen::VectorXi idx(1), correct(1);
  idx << 1;
  correct << 1;
  s.update(idx, correct);
  Eigen::Map<const ml::RowMatrix<float>, 0, Eigen::OuterStride<>> Xs(X.data(), 2, 8, Eigen::OuterStride<>(16));
  return loss > 0 && ml::target_cosines(Xs, W, y.head(2)).allFinite() ? 0 : 1;
}
