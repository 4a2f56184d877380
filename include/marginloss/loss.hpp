// marginloss: the entry points.
//
//   auto r = ml::forward_backward(policy, X, W, labels);  // r.loss, r.dX, r.dW
//
// X is B x D (one sample per row), W is C x D (one class per row), labels has B entries in
// [0, C). Both are raw (un-normalised); the loss normalises rows itself and the gradients are
// with respect to the raw X and W. Matrices must be row-major Eigen objects of the policy's
// scalar type: ml::RowMatrix<T>, an Eigen::Map of a foreign buffer, or an Eigen::Ref: nothing
// is copied. Labels may be any integer vector (Eigen::VectorXi, 64-bit from PyTorch, ...).
// Every bad input throws marginloss::invalid_argument naming the argument and the value.
#pragma once

#include <algorithm>

#include "detail/engine.hpp"
#include "distributed/communicator.hpp"
#include "detail/math.hpp"
#include "detail/row_pass.hpp"
#include "detail/validate.hpp"
#include "errors.hpp"
#include "policies/common.hpp"
#include "types.hpp"
#include "workspace.hpp"

MARGINLOSS_NAMESPACE_BEGIN

// How the classes are processed.
struct Options {
  // Classes per block. 0 (default): automatic -- the dense path (one B x C cosine buffer)
  // while that buffer fits in `memory_budget` bytes, otherwise blocks whose B x block buffer
  // takes about 8 MiB (at most memory_budget; at least 256 classes); the engine's class tiles
  // keep the work in cache whatever the block (8192 and 16384 classes measured equal, 1.28x
  // dense at 256 x 512 x 100k), so the block only bounds memory. A value >= C is the dense
  // path; smaller values force blocks: an online logsumexp over the blocks in the forward, and
  // a second pass that recomputes each block's cosines in the backward (one more B x D x C
  // product), with peak extra memory O(B x block + B x D) instead of O(B x C).
  Index class_block = 0;
  std::size_t memory_budget = std::size_t(512) << 20;
};

namespace detail {
template <typename T>
inline Index resolve_class_block(const Options& o, Index batch, Index classes) {
  if (o.class_block < 0) fail("Options::class_block = ", o.class_block, " must be >= 0");
  if (o.class_block > 0) return o.class_block;
  const auto row_bytes = static_cast<std::size_t>(batch > 0 ? batch : 1) * sizeof(T);
  if (static_cast<std::size_t>(classes) * row_bytes <= o.memory_budget) return classes;
  constexpr std::size_t block_bytes = std::size_t(8) << 20;
  const auto block = static_cast<Index>(std::min(block_bytes, o.memory_budget) / row_bytes);
  return block < 256 ? 256 : block;
}
}  // namespace detail

// Loss and gradients of forward_backward().
template <typename T>
struct Result {
  T loss;          // mean over the batch of the cross-entropy of the margined logits
  RowMatrix<T> dX; // dL/dX, B x D, with respect to the raw features
  RowMatrix<T> dW; // dL/dW, C x D, with respect to the raw class weights
  Vector<T> dmargins;  // dL/dmargins, C, for policies with learnable margins (else empty)
};

// Gradients of backward().
template <typename T>
struct Gradients {
  RowMatrix<T> dX;
  RowMatrix<T> dW;
  Vector<T> dmargins;  // for policies with learnable margins (else empty)
};

// Loss and gradient of cosine_forward_backward().
template <typename T>
struct CosineResult {
  T loss;
  RowMatrix<T> dcos;  // dL/dcos, B x C
};

// ---------------------------------------------------------------------------------------------
// Split forward / backward, for autograd engines: forward() leaves in `ws` what backward()
// needs; backward() takes the upstream gradient of the loss and writes dX, dW. Pass the same
// policy and W to both. A forward is consumed by one backward.

template <typename P, typename DX, typename DW, typename DL>
typename P::value_type forward(const P& policy, const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W,
                               const Eigen::MatrixBase<DL>& labels, Workspace<typename P::value_type>& ws,
                               const Options& options = {}) {
  using T = typename P::value_type;
  detail::check_row_major_matrix<DX, T>();
  detail::check_row_major_matrix<DW, T>();
  detail::check_label_vector<DL>();
  LocalCommunicator local;
  return detail::Engine::forward(policy, Eigen::Ref<const RowMatrix<T>>(X.derived()),
                                 Eigen::Ref<const RowMatrix<T>>(W.derived()), 0, W.rows(), labels, local,
                                 detail::resolve_class_block<T>(options, X.rows(), W.rows()), ws);
}

template <typename P, typename DW>
void backward(const P& policy, const Eigen::MatrixBase<DW>& W, Workspace<typename P::value_type>& ws,
              typename P::value_type grad_loss, Eigen::Ref<RowMatrix<typename P::value_type>> dX,
              Eigen::Ref<RowMatrix<typename P::value_type>> dW) {
  using T = typename P::value_type;
  detail::check_row_major_matrix<DW, T>();
  LocalCommunicator local;
  detail::Engine::backward(policy, Eigen::Ref<const RowMatrix<T>>(W.derived()), local, ws, grad_loss, dX, dW);
}

// Policies with learnable margins (AdaptiveMargin) also write dL/dmargins (C entries).
template <typename P, typename DW>
void backward(const P& policy, const Eigen::MatrixBase<DW>& W, Workspace<typename P::value_type>& ws,
              typename P::value_type grad_loss, Eigen::Ref<RowMatrix<typename P::value_type>> dX,
              Eigen::Ref<RowMatrix<typename P::value_type>> dW, Eigen::Ref<Vector<typename P::value_type>> dmargins) {
  using T = typename P::value_type;
  static_assert(detail::has_learnable_margins<P>::value, "marginloss: this policy has no learnable margins");
  detail::check_row_major_matrix<DW, T>();
  LocalCommunicator local;
  detail::Engine::backward(policy, Eigen::Ref<const RowMatrix<T>>(W.derived()), local, ws, grad_loss, dX, dW,
                           dmargins.data(), dmargins.size());
}

template <typename P, typename DW>
Gradients<typename P::value_type> backward(const P& policy, const Eigen::MatrixBase<DW>& W,
                                           Workspace<typename P::value_type>& ws,
                                           typename P::value_type grad_loss = 1) {
  Gradients<typename P::value_type> g;
  g.dX.resize(ws.batch(), ws.dim());
  g.dW.resize(W.rows(), W.cols());
  if constexpr (detail::has_learnable_margins<P>::value) {
    g.dmargins.resize(ws.num_classes());
    backward(policy, W, ws, grad_loss, g.dX, g.dW, g.dmargins);
  } else {
    backward(policy, W, ws, grad_loss, g.dX, g.dW);
  }
  return g;
}

// ---------------------------------------------------------------------------------------------
// Forward and backward in one call.

// Writes into caller-owned dX (B x D) and dW (C x D) using `ws`: after the first step of a
// training loop nothing is allocated. Returns the loss.
template <typename P, typename DX, typename DW, typename DL>
typename P::value_type forward_backward(const P& policy, const Eigen::MatrixBase<DX>& X,
                                        const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DL>& labels,
                                        Eigen::Ref<RowMatrix<typename P::value_type>> dX,
                                        Eigen::Ref<RowMatrix<typename P::value_type>> dW,
                                        Workspace<typename P::value_type>& ws, const Options& options = {}) {
  const auto loss = forward(policy, X, W, labels, ws, options);
  backward(policy, W, ws, typename P::value_type(1), dX, dW);
  return loss;
}

// The same for policies with learnable margins, also writing dL/dmargins (C entries).
template <typename P, typename DX, typename DW, typename DL>
typename P::value_type forward_backward(const P& policy, const Eigen::MatrixBase<DX>& X,
                                        const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DL>& labels,
                                        Eigen::Ref<RowMatrix<typename P::value_type>> dX,
                                        Eigen::Ref<RowMatrix<typename P::value_type>> dW,
                                        Eigen::Ref<Vector<typename P::value_type>> dmargins,
                                        Workspace<typename P::value_type>& ws, const Options& options = {}) {
  const auto loss = forward(policy, X, W, labels, ws, options);
  backward(policy, W, ws, typename P::value_type(1), dX, dW, dmargins);
  return loss;
}

// Allocating convenience form.
template <typename P, typename DX, typename DW, typename DL>
Result<typename P::value_type> forward_backward(const P& policy, const Eigen::MatrixBase<DX>& X,
                                                const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DL>& labels,
                                                const Options& options = {}) {
  using T = typename P::value_type;
  Workspace<T> ws;
  Result<T> r;
  r.dX.resize(X.rows(), X.cols());
  r.dW.resize(W.rows(), W.cols());
  if constexpr (detail::has_learnable_margins<P>::value) {
    r.dmargins.resize(W.rows());
    r.loss = forward_backward(policy, X, W, labels, r.dX, r.dW, r.dmargins, ws, options);
  } else {
    r.loss = forward_backward(policy, X, W, labels, r.dX, r.dW, ws, options);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// The target cosines t_i = cos(x_i, w_{y_i}) of a batch, clamped to [-1, 1], in O(B D): what
// running statistics such as CurricularFace's tau are updated from before a forward.
template <typename DX, typename DW, typename DL>
Vector<typename DX::Scalar> target_cosines(const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W,
                                           const Eigen::MatrixBase<DL>& labels) {
  using T = typename DX::Scalar;
  detail::check_row_major_matrix<DX, T>();
  detail::check_row_major_matrix<DW, T>();
  detail::check_label_vector<DL>();
  const Index B = X.rows();
  detail::check_batch(B, X.cols(), W.rows(), W.cols(), labels.size());
  Eigen::Matrix<Index, Eigen::Dynamic, 1> y;
  detail::copy_labels(labels, W.rows(), y);
  Vector<T> x_inv;
  detail::compute_row_norms<T>("X", Eigen::Ref<const RowMatrix<T>>(X.derived()), nullptr, x_inv);
  Vector<T> out(B);
  for (Index i = 0; i < B; ++i) {
    const double wn = detail::stable_row_norm(W.derived().row(y(i)).data(), W.cols());
    if (!detail::norm_in_range(wn, detail::NormRange<T>::lo, detail::NormRange<T>::hi))
      detail::fail_bad_row<T>("W", W.derived(), y(i), wn);
    out(i) = detail::clamp_cosine(static_cast<T>((X.derived().row(i) * x_inv(i)).dot(W.derived().row(y(i))) / wn));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Cosine level, for engines that normalise and multiply themselves: takes the B x C cosine
// matrix (values are clamped to [-1, 1]; beyond 1 + 1e-3 in magnitude they are rejected as
// not cosines) and returns the loss and dL/dcos. Policies with a feature-norm scale need the
// per-row scales S_i (the feature norms) and also return dL/dS_i.

namespace detail {

template <typename P, typename DC, typename DL, typename T = typename P::value_type>
T cosine_engine(const P& policy, const Eigen::MatrixBase<DC>& cos, const Eigen::MatrixBase<DL>& labels,
                const T* scales, Eigen::Ref<RowMatrix<T>> dcos, T* dscales) {
  static_assert(is_margin_policy_v<P>, "marginloss: P does not satisfy the policy contract (policies/common.hpp)");
  static_assert(!has_learnable_margins<P>::value,
                "marginloss: learnable margins need the labels' classes and the regulariser: use forward_backward()");
  check_row_major_matrix<DC, T>();
  check_label_vector<DL>();
  policy.validate();
  const Index B = cos.rows(), C = cos.cols();
  if (B == 0) fail("cos has 0 rows: the batch is empty");
  if (C == 0) fail("cos has 0 columns: there must be at least one class");
  if (labels.size() != B) fail("labels has ", labels.size(), " entries but cos has ", B, " rows");
  check_output("dcos", dcos.rows(), dcos.cols(), B, C);
  if (policy.scale_is_feature_norm() && !scales)
    fail(P::name, " scales logits by the feature norm: pass the per-row scales to cosine_forward_backward()");
  for (Index i = 0; i < B; ++i) {
    const auto y = labels.derived().coeff(i);
    if (!label_in_range(y, C)) fail_label(i, y, C);
    if (scales && !(std::isfinite(scales[i]) && scales[i] > T(0)))
      fail("scales[", i, "] = ", scales[i], " must be finite and > 0");
  }
  dcos = cos.derived();
  // Validate and clamp in the output buffer, which the gradient then overwrites in place.
  bool bad = false;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) reduction(|| : bad)
#endif
  for (Index i = 0; i < B; ++i) {
    T* c = dcos.row(i).data();
    for (Index j = 0; j < C; ++j) {
      if (!(std::fabs(c[j]) <= T(1.001))) bad = true;
      c[j] = clamp_cosine(c[j]);
    }
  }
  if (bad)
    for (Index i = 0; i < B; ++i)
      for (Index j = 0; j < C; ++j)
        if (!(std::fabs(cos.derived().coeff(i, j)) <= T(1.001)))
          fail("cos(", i, ", ", j, ") = ", cos.derived().coeff(i, j), " is not a cosine (finite, |c| <= 1)");

  const T coef = T(1) / static_cast<T>(B);
  double total = 0;
  bool overflow = false;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) reduction(+ : total) reduction(|| : overflow)
#endif
  for (Index i = 0; i < B; ++i) {
    T* c = dcos.row(i).data();
    const Index y = static_cast<Index>(labels.derived().coeff(i));
    const auto terms = policy.row(c[y], y);
    const T S = policy.scale(scales ? scales[i] : T(1));
    const T shift = span_max_logit(policy, terms, S, c, C, y);
    const T lse = shift + static_cast<T>(std::log(span_sum_exp(policy, terms, S, c, C, y, shift)));
    total += static_cast<double>(lse - S * terms.target.value);
    const double sz = span_gradient(policy, terms, S, c, C, y, lse, coef, static_cast<const T*>(nullptr), c);
    if (dscales) dscales[i] = policy.scale_is_feature_norm() ? static_cast<T>(sz / static_cast<double>(S)) : T(0);
    overflow = overflow || !all_finite(dcos.row(i)) || (dscales && !std::isfinite(dscales[i]));
  }
  const T loss = static_cast<T>(total / static_cast<double>(B));
  if (!std::isfinite(loss)) fail_not_representable("the loss");
  if (overflow) fail_not_representable("a gradient");
  return loss;
}

}  // namespace detail

// Fixed-scale policies: writes dL/dcos into `dcos` (B x C, may not alias `cos`), returns the loss.
template <typename P, typename DC, typename DL>
typename P::value_type cosine_forward_backward(const P& policy, const Eigen::MatrixBase<DC>& cos,
                                               const Eigen::MatrixBase<DL>& labels,
                                               Eigen::Ref<RowMatrix<typename P::value_type>> dcos) {
  return detail::cosine_engine(policy, cos, labels, static_cast<const typename P::value_type*>(nullptr), dcos,
                               static_cast<typename P::value_type*>(nullptr));
}

// Any policy, with the per-row scales (used by feature-norm policies, S_i = scales_i) and their
// gradient dL/dscales (zero for fixed-scale policies).
template <typename P, typename DC, typename DL>
typename P::value_type cosine_forward_backward(const P& policy, const Eigen::MatrixBase<DC>& cos,
                                               const Eigen::MatrixBase<DL>& labels,
                                               const Eigen::Ref<const Vector<typename P::value_type>>& scales,
                                               Eigen::Ref<RowMatrix<typename P::value_type>> dcos,
                                               Eigen::Ref<Vector<typename P::value_type>> dscales) {
  if (scales.size() != cos.rows()) detail::fail("scales has ", scales.size(), " entries but cos has ", cos.rows(), " rows");
  if (dscales.size() != cos.rows()) detail::fail("dscales has ", dscales.size(), " entries but cos has ", cos.rows(), " rows");
  return detail::cosine_engine(policy, cos, labels, scales.data(), dcos, dscales.data());
}

// Allocating form for fixed-scale policies.
template <typename P, typename DC, typename DL>
CosineResult<typename P::value_type> cosine_forward_backward(const P& policy, const Eigen::MatrixBase<DC>& cos,
                                                             const Eigen::MatrixBase<DL>& labels) {
  CosineResult<typename P::value_type> r;
  r.dcos.resize(cos.rows(), cos.cols());
  r.loss = cosine_forward_backward(policy, cos, labels, r.dcos);
  return r;
}

MARGINLOSS_NAMESPACE_END
