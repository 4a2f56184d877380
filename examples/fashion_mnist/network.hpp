// The embedding networks, trained by SGD with momentum and manual backpropagation:
//   mlp:  x = relu(a W1 + b1) W2 + b2  (784 -> 256 -> ReLU -> D, dropout on the hidden layer)
//   conv: conv 5x5x8 -> ReLU -> max-pool 2 -> conv 5x5x16 -> ReLU -> max-pool 2 -> FC 256 -> D
//         (im2col + Eigen products, channels last)
// either optionally followed by batch normalisation of the embedding (--bn).
#pragma once
#include <memory>
#include <random>
#include <vector>

#include "../common/sgd_param.hpp"
#include "types.hpp"

namespace fashion_mnist {

// A trainable tensor with its gradient and momentum buffer (examples/common/sgd_param.hpp).
using Param = marginloss_examples::SgdParam;

class Net {
 public:
  static constexpr int kIn = 784;
  virtual ~Net() = default;
  // X (B x D) from A (B x 784); keeps what backward needs. `rng` non-null: training (dropout).
  virtual void forward(const Mat& A, Mat& X, std::mt19937* rng) = 0;
  virtual void backward(const Mat& A, const Mat& dX) = 0;
  virtual std::vector<Param*> params() = 0;
  virtual int dim() const = 0;
  void step(float lr, float momentum, float wd) {
    for (Param* p : params()) p->step(lr, momentum, wd);
  }
  // Embeddings of many inputs, in chunks.
  Mat embed(const Mat& A);
};

// The conv net (`conv`) or the MLP, with a D = `dim` embedding, initialised from `rng`.
std::unique_ptr<Net> make_net(bool conv, int dim, float dropout, bool bn, std::mt19937& rng);

}  // namespace fashion_mnist
