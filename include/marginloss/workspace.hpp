// marginloss: caller-owned memory of the CPU engine, reused across training steps.
#pragma once

#include <cstddef>

#include "types.hpp"

MARGINLOSS_NAMESPACE_BEGIN

namespace detail {
struct DenseEngine;
}

// Holds everything a forward pass leaves for its backward pass: the normalised features, the
// B x C cosine buffer (the only B x C buffer; the backward overwrites it with dL/dcos), the
// norms and the per-row log-partition values. Buffers grow to the largest shape seen and are
// reused, so a training loop that keeps one Workspace allocates nothing per step after the
// first. A Workspace may be used by one call at a time; distinct workspaces are independent.
template <typename T>
class Workspace {
 public:
  Workspace() = default;

  // Bytes the dense engine needs for a batch of B samples, C classes and feature dimension D.
  static std::size_t bytes_required(Index batch, Index dim, Index classes) {
    const auto b = static_cast<std::size_t>(batch), d = static_cast<std::size_t>(dim),
               c = static_cast<std::size_t>(classes);
    return sizeof(T) * (b * d + b * c + 6 * b + c) + sizeof(Index) * b;
  }

  // Allocates for the given shape up front (optional: calls size the buffers themselves).
  void reserve(Index batch, Index dim, Index classes) {
    xhat_.resize(batch, dim);
    cosines_.resize(batch, classes);
    x_norm_.resize(batch);
    x_inv_norm_.resize(batch);
    target_cos_.resize(batch);
    lse_.resize(batch);
    row_loss_.resize(batch);
    dscale_.resize(batch);
    w_inv_norm_.resize(classes);
    labels_.resize(batch);
  }

  // True between a forward() and the backward() that consumes it.
  bool holds_forward() const { return holds_forward_; }
  Index batch() const { return xhat_.rows(); }
  Index dim() const { return xhat_.cols(); }
  Index classes() const { return cosines_.cols(); }
  // The loss of the last forward (batch mean).
  T loss() const { return loss_; }

 private:
  friend struct detail::DenseEngine;

  RowMatrix<T> xhat_;        // B x D, x_i / |x_i|
  RowMatrix<T> cosines_;     // B x C, clamped cosines; dL/dcos scaled by 1/|w_j| after backward
  Vector<T> x_norm_;         // B
  Vector<T> x_inv_norm_;     // B
  Vector<T> target_cos_;     // B, t_i
  Vector<T> lse_;            // B, logsumexp_j z_ij
  Vector<T> row_loss_;       // B
  Vector<T> dscale_;         // B, dL/dS_i (feature-norm scale)
  Vector<T> w_inv_norm_;     // C
  Eigen::Matrix<Index, Eigen::Dynamic, 1> labels_;
  T loss_ = T(0);
  bool holds_forward_ = false;
};

MARGINLOSS_NAMESPACE_END
