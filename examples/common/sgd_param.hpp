// A trainable parameter of the examples' networks and heads: its value, the gradient the
// backward pass writes, and SGD with (heavy-ball) momentum and decoupled-from-biases decay:
//   v <- momentum v + grad (+ wd value when `decay`),   value <- value - lr v.
// Header-only; shared by examples/fashion_mnist and examples/glyphs.
#pragma once
#include <random>

#include <marginloss/types.hpp>

namespace marginloss_examples {

struct SgdParam {
  using Mat = marginloss::RowMatrix<float>;
  Mat value, grad, velocity;
  bool decay;  // weight decay applies (weights, not biases)

  SgdParam(Eigen::Index rows, Eigen::Index cols, bool apply_decay)
      : value(Mat::Zero(rows, cols)), grad(Mat::Zero(rows, cols)), velocity(Mat::Zero(rows, cols)),
        decay(apply_decay) {}

  void step(float lr, float momentum, float wd) {
    if (decay)
      velocity = momentum * velocity + grad + wd * value;
    else
      velocity = momentum * velocity + grad;
    value -= lr * velocity;
  }

  // value ~ N(0, stddev^2), drawn in storage order from `rng`.
  void init_normal(std::mt19937& rng, float stddev) {
    std::normal_distribution<float> normal(0.f, 1.f);
    for (Eigen::Index k = 0; k < value.size(); ++k) value.data()[k] = stddev * normal(rng);
  }
};

}  // namespace marginloss_examples
