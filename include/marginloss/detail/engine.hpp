// marginloss: the CPU engine, dense, class-chunked and class-sharded (docs/formulas.md §1, §7).
//
// Each process owns a contiguous range of classes (all of them unless sharded: rows of W,
// starting at global class `class_offset`) and sees the whole batch. The range is processed in
// blocks of `block` classes:
//   forward : per block K = X^ W_b^T (B x block), c_ij = K_ij / |w_j|; per row the block's
//             max and sum of exp, merged into a running (max, rescaled sum) -- an online
//             logsumexp; across ranks all-reduce(max), rescale, all-reduce(sum).
//   backward: per block (recomputing K unless the range is one block, the dense path kept in
//             the workspace) G'_ij = dL/dc_ij / |w_j| in place of c, then
//             dX += G' W_b,  dW_b = Q_j (G'^T X^)_j   (Q_j = I - w^_j w^_j^T),
//             all-reduce(sum) of dX across ranks, then dX_i = P_i dX_i / |x_i| + dL/dS_i x^_i.
// The projections use <(G W^)_i, x^_i> = sum_j G_ij c_ij, so neither the r_i nor the q_j of
// docs/formulas.md are accumulated and no normalised copy of W is made. The target cosine t_i
// comes from its own dot product on the owning rank (all-reduced), so every engine and rank
// sees the bit-identical t_i and the once-per-row policy terms (margined target, mining
// threshold) are known before any class is visited.
#pragma once

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <string>

#include "../errors.hpp"
#include "../policies/common.hpp"
#include "../workspace.hpp"
#include "math.hpp"
#include "row_norms.hpp"
#include "row_pass.hpp"
#include "validate.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// Every rank learns whether any rank rejected its input before the first collective that
// depends on it, so a bad shard throws everywhere instead of deadlocking the others.
template <typename Comm>
inline void agree_on_errors(Comm& comm, const std::exception_ptr& error) {
  if (comm.size() > 1) {
    double failed = error ? 1.0 : 0.0;
    comm.allreduce_sum(&failed, 1);
    if (failed > 0 && !error) fail("another rank rejected its input (", failed, " rank(s) failed); see its message");
  }
  if (error) std::rethrow_exception(error);
}

struct Engine {
  template <typename P, typename Labels, typename Comm, typename T = typename P::value_type>
  static T forward(const P& policy, const Eigen::Ref<const RowMatrix<T>>& X, const Eigen::Ref<const RowMatrix<T>>& W,
                   Index class_offset, Index num_classes, const Eigen::MatrixBase<Labels>& labels, Comm& comm,
                   Index block, Workspace<T>& ws) {
    static_assert(is_margin_policy_v<P>, "marginloss: P does not satisfy the policy contract (policies/common.hpp)");
    ws.holds_forward_ = false;
    const Index B = X.rows(), D = X.cols(), C = W.rows();
    std::exception_ptr error;
    try {
      policy.validate();
      check_batch(B, D, num_classes, W.cols(), labels.size());
      if (class_offset < 0 || class_offset + C > num_classes)
        fail("the shard's classes [", class_offset, ", ", class_offset + C, ") are not inside [0, ", num_classes, ")");
      if constexpr (has_class_count<P>::value)
        if (policy.class_count() != num_classes)
          fail(P::name, ": margins has ", policy.class_count(), " entries but there are ", num_classes, " classes");
      copy_labels(labels, num_classes, ws.labels_);
      compute_row_norms<T>("X", X, &ws.x_norm_, ws.x_inv_norm_);
      Workspace<T>::grow(ws.w_inv_norm_, C);
      compute_row_norms<T>("W", W, static_cast<T*>(nullptr), ws.w_inv_norm_.data());
    } catch (const invalid_argument&) {
      error = std::current_exception();
    }
    agree_on_errors(comm, error);

    ws.xhat_.resize(B, D);
    ws.xhat_.noalias() = ws.x_inv_norm_.asDiagonal() * X;
    ws.num_classes_ = num_classes;
    ws.class_offset_ = class_offset;
    ws.local_classes_ = C;
    ws.block_ = (block <= 0 || block >= C) ? C : block;
    Workspace<T>::grow(ws.cosine_storage_, B * ws.block_);
    auto cosines = ws.cosines();

    // t_i on the rank owning y_i, zero elsewhere, then summed: exact, one owner per row.
    ws.target_cos_.resize(B);
    for (Index i = 0; i < B; ++i) {
      const Index local = ws.labels_(i) - class_offset;
      ws.target_cos_(i) = (local >= 0 && local < C)
                              ? clamp_cosine(ws.xhat_.row(i).dot(W.row(local)) * ws.w_inv_norm_(local))
                              : T(0);
    }
    comm.allreduce_sum(ws.target_cos_.data(), B);

    ws.row_max_.setConstant(B, -std::numeric_limits<T>::infinity());
    ws.row_sum_.setZero(B);
    for (Index j0 = 0; j0 < C; j0 += ws.block_) {
      const Index nb = std::min(ws.block_, C - j0);
      auto K = cosines.leftCols(nb);
      K.noalias() = ws.xhat_ * W.middleRows(j0, nb).transpose();
      const T* w_inv = ws.w_inv_norm_.data() + j0;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
      for (Index i = 0; i < B; ++i) {
        T* c = cosines.row(i).data();
        for (Index j = 0; j < nb; ++j) c[j] = clamp_cosine(c[j] * w_inv[j]);
        const auto terms = policy.row(ws.target_cos_(i), ws.labels_(i));
        const T S = policy.scale(ws.x_norm_(i));
        const Index target = ws.labels_(i) - class_offset - j0;
        const T m = span_max_logit(policy, terms, S, c, nb, target);
        const double s = span_sum_exp(policy, terms, S, c, nb, target, m);
        merge_lse(ws.row_max_(i), ws.row_sum_(i), m, s);
      }
    }
    if (comm.size() > 1) {
      // Global max, then each rank rescales its sum to it before the sum is reduced.
      ws.lse_ = ws.row_max_;
      comm.allreduce_max(ws.lse_.data(), B);
      for (Index i = 0; i < B; ++i)
        ws.row_sum_(i) = ws.row_sum_(i) == 0 ? 0.0 : ws.row_sum_(i) * std::exp(static_cast<double>(ws.row_max_(i) - ws.lse_(i)));
      ws.row_max_ = ws.lse_;
      comm.allreduce_sum(ws.row_sum_.data(), B);
    }

    ws.lse_.resize(B);
    ws.row_loss_.resize(B);
    for (Index i = 0; i < B; ++i) {
      ws.lse_(i) = ws.row_max_(i) + static_cast<T>(std::log(ws.row_sum_(i)));
      const auto terms = policy.row(ws.target_cos_(i), ws.labels_(i));
      ws.row_loss_(i) = ws.lse_(i) - policy.scale(ws.x_norm_(i)) * terms.target.value;
    }
    // Sequential sum: the loss does not depend on the thread count.
    double total = 0;
    for (Index i = 0; i < B; ++i) total += static_cast<double>(ws.row_loss_(i));
    ws.loss_ = static_cast<T>(total / static_cast<double>(B));
    if constexpr (has_learnable_margins<P>::value) {
      ws.batch_classes_ = ws.labels_;
      std::sort(ws.batch_classes_.data(), ws.batch_classes_.data() + B);
      ws.batch_class_count_ = std::unique(ws.batch_classes_.data(), ws.batch_classes_.data() + B) - ws.batch_classes_.data();
      ws.loss_ += policy.regulariser(ws.batch_classes_.data(), ws.batch_class_count_);
    }
    // Identical on every rank, so every rank throws together.
    if (!std::isfinite(ws.loss_)) fail_not_representable("the loss");
    ws.holds_forward_ = true;
    return ws.loss_;
  }

  template <typename P, typename Comm, typename T = typename P::value_type>
  static void backward(const P& policy, const Eigen::Ref<const RowMatrix<T>>& W, Comm& comm, Workspace<T>& ws,
                       T grad_loss, Eigen::Ref<RowMatrix<T>> dX, Eigen::Ref<RowMatrix<T>> dW, T* dmargins = nullptr,
                       Index dmargins_size = 0) {
    // A forward is consumed by one backward call, also by one that throws: its buffers are
    // about to be overwritten.
    const bool held = ws.holds_forward_;
    ws.holds_forward_ = false;
    std::exception_ptr error;
    try {
      if (!held) fail("backward() needs a forward() on the same workspace first (each forward is consumed once)");
      if (W.rows() != ws.local_classes_ || W.cols() != ws.dim())
        fail("W is ", W.rows(), "x", W.cols(), " in backward() but was ", ws.local_classes_, "x", ws.dim(), " in forward()");
      check_output("dX", dX.rows(), dX.cols(), ws.batch(), ws.dim());
      check_output("dW", dW.rows(), dW.cols(), ws.local_classes_, ws.dim());
      if (!std::isfinite(grad_loss)) fail("grad_loss = ", grad_loss, " must be finite");
      if (dmargins && dmargins_size != ws.num_classes_)
        fail("dmargins has ", dmargins_size, " entries but there are ", ws.num_classes_, " classes");
    } catch (const invalid_argument&) {
      error = std::current_exception();
    }
    agree_on_errors(comm, error);

    const Index B = ws.batch(), C = ws.local_classes_;
    const bool one_block = ws.block_ >= C;
    const T coef = grad_loss / static_cast<T>(B);
    // Sharded: accumulate into the workspace (contiguous, for the all-reduce).
    const bool sharded = comm.size() > 1;
    if (sharded) ws.dx_partial_.resize(B, ws.dim());
    Eigen::Ref<RowMatrix<T>> acc = sharded ? Eigen::Ref<RowMatrix<T>>(ws.dx_partial_) : dX;
    ws.dscale_.setZero(B);
    bool overflow = false;
    auto cosines = ws.cosines();
    for (Index j0 = 0; j0 < C; j0 += ws.block_) {
      const Index nb = std::min(ws.block_, C - j0);
      auto K = cosines.leftCols(nb);
      const T* w_inv = ws.w_inv_norm_.data() + j0;
      if (!one_block) K.noalias() = ws.xhat_ * W.middleRows(j0, nb).transpose();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
      for (Index i = 0; i < B; ++i) {
        T* c = cosines.row(i).data();
        if (!one_block)
          for (Index j = 0; j < nb; ++j) c[j] = clamp_cosine(c[j] * w_inv[j]);
        const auto terms = policy.row(ws.target_cos_(i), ws.labels_(i));
        const T S = policy.scale(ws.x_norm_(i));
        const Index target = ws.labels_(i) - ws.class_offset_ - j0;
        const double sz = span_gradient(policy, terms, S, c, nb, target, ws.lse_(i), coef, w_inv, c);
        if (policy.scale_is_feature_norm()) ws.dscale_(i) += static_cast<T>(sz / static_cast<double>(S));
      }
      if (j0 == 0)
        acc.noalias() = K * W.middleRows(j0, nb);
      else
        acc.noalias() += K * W.middleRows(j0, nb);
      auto dWb = dW.middleRows(j0, nb);
      dWb.noalias() = K.transpose() * ws.xhat_;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) reduction(|| : overflow)
#endif
      for (Index j = 0; j < nb; ++j) {
        auto u = dWb.row(j);
        const auto w_hat = W.row(j0 + j) * w_inv[j];  // formed element by element: no 1/|w|^2 overflow
        const T radial = u.dot(w_hat);
        u -= radial * w_hat;
        overflow = overflow || !u.allFinite();
      }
    }
    if (C == 0) acc.setZero();
    if (sharded) {
      comm.allreduce_sum(ws.dx_partial_.data(), ws.dx_partial_.size());
      if (policy.scale_is_feature_norm()) comm.allreduce_sum(ws.dscale_.data(), B);
      dX = ws.dx_partial_;
    }
    if constexpr (has_learnable_margins<P>::value) {
      // dL/dm_k = sum_{i: y_i = k} dL/dz_iy S_i df/dm + dR/dm_k. Every rank knows t_i and lse_i,
      // so every rank computes the whole vector without communication.
      if (dmargins) {
        std::fill(dmargins, dmargins + ws.num_classes_, T(0));
        for (Index i = 0; i < B; ++i) {
          const auto terms = policy.row(ws.target_cos_(i), ws.labels_(i));
          const T S = policy.scale(ws.x_norm_(i));
          const T p = std::exp(S * terms.target.value - ws.lse_(i));
          dmargins[ws.labels_(i)] += coef * (p - T(1)) * S * terms.dtarget_dmargin;
        }
        policy.add_regulariser_gradient(grad_loss, ws.batch_classes_.data(), ws.batch_class_count_, dmargins);
      }
    }
    const bool feature_norm = policy.scale_is_feature_norm();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) reduction(|| : overflow)
#endif
    for (Index i = 0; i < B; ++i) {
      auto v = dX.row(i);
      const auto xh = ws.xhat_.row(i);
      v -= v.dot(xh) * xh;
      v *= ws.x_inv_norm_(i);
      if (feature_norm) v += ws.dscale_(i) * xh;
      overflow = overflow || !v.allFinite();
    }
    if constexpr (has_learnable_margins<P>::value)
      if (dmargins)
        for (Index k = 0; k < ws.num_classes_; ++k) overflow = overflow || !std::isfinite(dmargins[k]);
    // dW is local to a shard: a rank may throw alone here, after its last collective.
    if (overflow) fail_not_representable("a gradient");
  }

 private:
  // Online logsumexp: merges a block's (max m, sum of exp(z - m)) into the row's running pair.
  template <typename T>
  static void merge_lse(T& run_max, double& run_sum, T m, double s) {
    if (!(s > 0)) return;  // empty block
    if (m > run_max) {
      run_sum = (run_sum == 0 ? 0.0 : run_sum * std::exp(static_cast<double>(run_max - m))) + s;
      run_max = m;
    } else {
      run_sum += s * std::exp(static_cast<double>(m - run_max));
    }
  }
};

}  // namespace detail
MARGINLOSS_NAMESPACE_END
