// A few training steps with each margin policy: a linear embedding E (D_in -> D) and the class
// weights W are learned by SGD on synthetic clustered data, and the loss falls.
//
//   ./train_steps [steps]
#include <marginloss/marginloss.hpp>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace ml = marginloss;
using Mat = ml::RowMatrix<float>;

struct Data {
  Mat inputs;  // N x D_in
  Eigen::VectorXi labels;
};

// N samples around C random centres in D_in dimensions.
Data make_data(int n, int classes, int d_in, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  Mat centres(classes, d_in);
  for (int j = 0; j < classes; ++j)
    for (int k = 0; k < d_in; ++k) centres(j, k) = normal(rng);
  Data d{Mat(n, d_in), Eigen::VectorXi(n)};
  for (int i = 0; i < n; ++i) {
    d.labels(i) = i % classes;
    for (int k = 0; k < d_in; ++k) d.inputs(i, k) = centres(d.labels(i), k) + 0.8f * normal(rng);
  }
  return d;
}

// `before_step(policy)` runs before every step (SphereFace uses it to anneal lambda).
template <typename Policy, typename Hook>
void train(const std::string& name, Policy policy, const Data& data, int steps, int d, Hook before_step) {
  const int classes = data.labels.maxCoeff() + 1, d_in = static_cast<int>(data.inputs.cols()), batch = 64;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 0.1f);
  Mat E(d_in, d), W(classes, d);
  for (int k = 0; k < E.size(); ++k) E.data()[k] = normal(rng);
  for (int k = 0; k < W.size(); ++k) W.data()[k] = normal(rng);

  // Buffers and workspace allocated once; the loop allocates nothing in the loss.
  Mat X(batch, d), dX(batch, d), dW(classes, d), dE(d_in, d);
  ml::Workspace<float> ws;
  const float lr = 0.5f;
  std::printf("%-16s", name.c_str());
  for (int step = 0; step < steps; ++step) {
    const int first = (step * batch) % static_cast<int>(data.inputs.rows() - batch);
    const auto inputs = data.inputs.middleRows(first, batch);
    const auto labels = data.labels.segment(first, batch);
    before_step(policy);
    X.noalias() = inputs * E;
    const float loss = ml::forward_backward(policy, X, W, labels, {dX, dW}, ws);
    dE.noalias() = inputs.transpose() * dX;
    E -= lr * dE;
    W -= lr * dW;
    if (step % (steps / 8) == 0 || step == steps - 1) std::printf(" %7.3f", loss);
  }
  std::printf("\n");
}

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 400;
  if (steps < 8) {
    std::fprintf(stderr, "usage: train_steps [steps >= 8]\n");
    return 2;
  }
  const Data data = make_data(4096, 20, 32, 1);
  std::printf("loss every %d steps (batch 64, 20 classes, 32 -> 16 dims)\n", steps / 8);
  auto nothing = [](auto&) {};
  train("NormFace", ml::NormFace<float>{16}, data, steps, 16, nothing);
  train("CosFace", ml::CosFace<float>{16, 0.35f}, data, steps, 16, nothing);
  train("ArcFace", ml::ArcFace<float>{16, 0.5f}, data, steps, 16, nothing);
  train("Combined", ml::CombinedMargin<float>{16, 1.f, 0.3f, 0.2f}, data, steps, 16, nothing);
  // SphereFace as originally trained: feature-norm scale, lambda annealed from 1000 to 5.
  ml::LambdaSchedule schedule;
  train("SphereFace", ml::SphereFace<float>{4, 1000.f}, data, steps, 16,
        [&](ml::SphereFace<float>& p) { p.lambda = static_cast<float>(schedule.step()); });
  return 0;
}
