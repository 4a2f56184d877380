// The embedding network of the glyph demo: an MLP trained by SGD with momentum and
// hand-written backpropagation (Eigen products; OpenMP threads inside Eigen when enabled):
//
//   x = relu(a W1 + b1) W2 + b2      (size^2 -> hidden -> ReLU -> dim)
//
// A small conv net was not used: on 2 cores it trains about 10x slower per image (measured
// on the Fashion-MNIST example), and the MLP already separates the losses (README.md).
#pragma once
#include <marginloss/marginloss.hpp>

#include <random>
#include <vector>

#include "../common/sgd_param.hpp"

namespace glyphs {

using Mat = marginloss::RowMatrix<float>;

// A parameter with its gradient and momentum buffer (examples/common/sgd_param.hpp).
using Param = marginloss_examples::SgdParam;

class Mlp {
 public:
  Mlp(int in, int hidden, int dim, std::mt19937& rng);
  // X (B x dim) from A (B x in); keeps what backward needs.
  void forward(const Mat& A, Mat& X);
  // dL/dparameters from dL/dX (after forward on the same A).
  void backward(const Mat& A, const Mat& dX);
  void step(float lr, float momentum, float wd);
  // Embeddings of many inputs, in chunks (no state kept).
  Mat embed(const Mat& A);
  int dim() const { return static_cast<int>(W2.value.cols()); }
  int in() const { return static_cast<int>(W1.value.rows()); }

 private:
  Param W1, b1, W2, b2;
  Mat H, R, dR;  // per-batch activations, allocated once
};

}  // namespace glyphs
