// marginloss: the dense CPU engine. Three products around one fused element-wise pass
// (docs/formulas.md §1):
//   forward : K = X^ W^T (B x C), c_ij = K_ij / |w_j|, per row: max and sum of exp -> loss
//   backward: per row G'_ij = dL/dc_ij / |w_j| (in place of c), then
//             dX_i = P_i (G' W)_i / |x_i| + dL/dS_i x^_i      P_i = I - x^_i x^_i^T
//             dW_j = Q_j (G'^T X^)_j                          Q_j = I - w^_j w^_j^T
// The projections use <(G W^)_i, x^_i> = sum_j G_ij c_ij, so neither r_i nor the column sums
// q_j of docs/formulas.md are accumulated separately, and no normalised copy of W is made: the
// only B x C buffer is the workspace's cosine matrix.
#pragma once

#include <cmath>

#include "../errors.hpp"
#include "../policies/common.hpp"
#include "../workspace.hpp"
#include "math.hpp"
#include "row_norms.hpp"
#include "row_pass.hpp"
#include "validate.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

struct DenseEngine {
  template <typename P, typename Labels, typename T = typename P::value_type>
  static T forward(const P& policy, const Eigen::Ref<const RowMatrix<T>>& X, const Eigen::Ref<const RowMatrix<T>>& W,
                   const Eigen::MatrixBase<Labels>& labels, Workspace<T>& ws) {
    static_assert(is_margin_policy_v<P>, "marginloss: P does not satisfy the policy contract (policies/common.hpp)");
    ws.holds_forward_ = false;
    policy.validate();
    const Index B = X.rows(), D = X.cols(), C = W.rows();
    check_batch(B, D, C, W.cols(), labels.size());
    copy_labels(labels, C, ws.labels_);

    compute_row_norms<T>("X", X, &ws.x_norm_, ws.x_inv_norm_);
    compute_row_norms<T>("W", W, nullptr, ws.w_inv_norm_);
    ws.xhat_.resize(B, D);
    ws.xhat_.noalias() = ws.x_inv_norm_.asDiagonal() * X;
    ws.cosines_.resize(B, C);
    ws.cosines_.noalias() = ws.xhat_ * W.transpose();

    ws.target_cos_.resize(B);
    ws.lse_.resize(B);
    ws.row_loss_.resize(B);
    ws.dscale_.resize(B);
    const T* w_inv = ws.w_inv_norm_.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (Index i = 0; i < B; ++i) {
      T* c = ws.cosines_.row(i).data();
      for (Index j = 0; j < C; ++j) c[j] = clamp_cosine(c[j] * w_inv[j]);
      const Index y = ws.labels_(i);
      // The target cosine from its own dot product: every engine (dense, chunked, sharded)
      // then sees the bit-identical t_i.
      const T t = clamp_cosine(ws.xhat_.row(i).dot(W.row(y)) * w_inv[y]);
      ws.target_cos_(i) = t;
      const auto terms = policy.row(t, y);
      const T S = policy.scale(ws.x_norm_(i));
      const T shift = span_max_logit(policy, terms, S, c, C, y);
      const double sum = span_sum_exp(policy, terms, S, c, C, y, shift);
      const T lse = shift + static_cast<T>(std::log(sum));
      ws.lse_(i) = lse;
      ws.row_loss_(i) = lse - S * terms.target.value;
    }
    // Sequential sum: the loss does not depend on the thread count.
    double total = 0;
    for (Index i = 0; i < B; ++i) total += static_cast<double>(ws.row_loss_(i));
    ws.loss_ = static_cast<T>(total / static_cast<double>(B));
    ws.holds_forward_ = true;
    return ws.loss_;
  }

  template <typename P, typename T = typename P::value_type>
  static void backward(const P& policy, const Eigen::Ref<const RowMatrix<T>>& W, Workspace<T>& ws, T grad_loss,
                       Eigen::Ref<RowMatrix<T>> dX, Eigen::Ref<RowMatrix<T>> dW) {
    if (!ws.holds_forward_) fail("backward() needs a forward() on the same workspace first (each forward is consumed once)");
    const Index B = ws.batch(), D = ws.dim(), C = ws.classes();
    if (W.rows() != C || W.cols() != D)
      fail("W is ", W.rows(), "x", W.cols(), " in backward() but was ", C, "x", D, " in forward()");
    check_output("dX", dX.rows(), dX.cols(), B, D);
    check_output("dW", dW.rows(), dW.cols(), C, D);
    if (!std::isfinite(grad_loss)) fail("grad_loss = ", grad_loss, " must be finite");
    ws.holds_forward_ = false;

    const T coef = grad_loss / static_cast<T>(B);
    const T* w_inv = ws.w_inv_norm_.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (Index i = 0; i < B; ++i) {
      T* c = ws.cosines_.row(i).data();
      const Index y = ws.labels_(i);
      const auto terms = policy.row(ws.target_cos_(i), y);
      const T S = policy.scale(ws.x_norm_(i));
      const double sz = span_gradient(policy, terms, S, c, C, y, ws.lse_(i), coef, w_inv, c);
      ws.dscale_(i) = policy.scale_is_feature_norm() ? static_cast<T>(sz / static_cast<double>(S)) : T(0);
    }

    dX.noalias() = ws.cosines_ * W;
    const bool feature_norm = policy.scale_is_feature_norm();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (Index i = 0; i < B; ++i) {
      auto v = dX.row(i);
      const auto xh = ws.xhat_.row(i);
      v -= v.dot(xh) * xh;
      v *= ws.x_inv_norm_(i);
      if (feature_norm) v += ws.dscale_(i) * xh;
    }

    dW.noalias() = ws.cosines_.transpose() * ws.xhat_;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (Index j = 0; j < C; ++j) {
      auto u = dW.row(j);
      const auto w_hat = W.row(j) * w_inv[j];  // formed element by element: no 1/|w|^2 overflow
      const T radial = u.dot(w_hat);
      u -= radial * w_hat;
    }
  }
};

}  // namespace detail
MARGINLOSS_NAMESPACE_END
