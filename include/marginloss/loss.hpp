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
//
// The forward entry points (forward, forward_backward, the sharded, subset and cosine-level
// ones) take the policy by forwarding reference: a temporary or a const policy works for every
// stateless policy; a policy whose state each forward updates (CurricularFace's tau, with
// update_tau_in_forward = true, the default, as in the official code) must be a modifiable
// object, which the forward updates once the batch's target cosines are known.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "detail/engine.hpp"
#include "distributed/shard.hpp"
#include "gradients.hpp"
#include "distributed/communicator.hpp"
#include "detail/math.hpp"
#include "detail/row_pass.hpp"
#include "detail/validate.hpp"
#include "errors.hpp"
#include "options.hpp"
#include "policies/common.hpp"
#include "types.hpp"
#include "workspace.hpp"

MARGINLOSS_NAMESPACE_BEGIN

namespace detail {

// The CPU entry points reduce host memory: a Communicator, not a DeviceCommunicator.
template <typename Comm>
constexpr void check_host_communicator() {
  static_assert(is_communicator_v<Comm>,
                "marginloss: the communicator must be a Communicator: int rank() const, int size() const, "
                "allreduce_max and allreduce_sum of (T* data, Index n) for T = float and double "
                "(distributed/communicator.hpp)");
  static_assert(is_local_communicator_v<Comm> || !has_stream<Comm>::value,
                "marginloss: this communicator has stream(), a DeviceCommunicator whose all-reduces take device "
                "memory: use marginloss::cuda::forward with a Shard (cuda/loss.cuh), or a Communicator of host "
                "memory here");
}

}  // namespace detail

/// What forward() leaves for its backward(): the policy as the forward used it (CurricularFace's
/// tau after its update; policy()), W, the communicator of a sharded call and the workspace that
/// holds the forward's buffers (workspace()). Cheap to copy; refers to the workspace, W and the
/// communicator, which must outlive it. One backward per forward: a second one, or a backward
/// after another forward on the same workspace, throws. A backward that throws consumes its
/// forward, except for the two mistakes found before it starts: dmargins given or missing
/// against the policy, and a stale forward (the workspace's forward is another's).
template <typename P, typename Comm = LocalCommunicator>
class Forward : public detail::ForwardContext<P, Workspace<typename P::value_type>> {
  using T = typename P::value_type;
  using Base = detail::ForwardContext<P, Workspace<T>>;

 public:
  /// The loss of this forward (the batch mean of the cross-entropy, plus regulariser()).
  T loss() const { return loss_; }
  /// The margins' regulariser R included in loss() (AdaptiveMargin); 0 for other policies.
  T regulariser() const { return regulariser_; }

  /// \cond INTERNAL
  Forward(detail::ForwardKey, const P& policy, const Eigen::Ref<const RowMatrix<T>>& W, Workspace<T>& ws, Comm* comm)
      : Base(policy, ws), W_(W), comm_(comm), loss_(ws.loss()), regulariser_(ws.regulariser()) {}
  const Eigen::Ref<const RowMatrix<T>>& weights() const { return W_; }
  Comm* communicator() const { return comm_; }
  using Base::check_current;
  /// \endcond

 private:
  Eigen::Ref<const RowMatrix<T>> W_;
  Comm* comm_;  // null for one process
  T loss_, regulariser_;
};

namespace detail {

template <typename PP, typename DX, typename DW, typename L, typename U, typename Comm>
void check_forward_arguments() {
  using T = policy_value_t<PP>;
  check_host_communicator<Comm>();
  check_row_major_matrix<DX, T>();
  check_row_major_matrix<DW, T>();
  check_workspace_scalar<U, T>();
}

// The forward on this process's rows W of global classes [offset, offset + W.rows()) of
// num_classes; with_regulariser = false leaves a learnable-margins policy's regulariser to the
// caller (sampling/subset.hpp).
template <typename PP, typename DX, typename DW, typename L, typename T, typename Comm>
T forward_rows(PP&& policy, const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W, Index offset,
               Index num_classes, const L& labels, Comm& comm, Workspace<T>& ws, const Options& options,
               bool with_regulariser) {
  return Engine::forward(std::forward<PP>(policy), Eigen::Ref<const RowMatrix<T>>(X.derived()),
                         Eigen::Ref<const RowMatrix<T>>(W.derived()), offset, num_classes,
                         label_argument<L>::view(labels), comm,
                         resolve_class_block<T>(options, X.rows(), W.rows(), kCpuBlockBytes), ws, with_regulariser);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Split forward / backward, for autograd engines: forward() returns a Forward context (the
// loss, and what backward() needs); backward(context, grad_loss, {dX, dW}) writes the gradients.
//
// Every argument type is a template parameter checked by a static_assert at the top of the
// body, so a misuse (double data with a float policy, a column-major or const output, a
// Workspace of another scalar, labels that are not integers) reports the library's message
// first rather than "no matching function".

/// The loss L = mean_i CE(z_i, y_i) over the margined, scaled logits z_ij (plus the margins'
/// regulariser for learnable margins). X (B x D) and W (C x D) are raw; labels are B integers in
/// [0, C). Returns the context backward() takes; fwd.loss() is the loss.
template <typename PP, typename DX, typename DW, typename L, typename U>
Forward<std::decay_t<PP>> forward(PP&& policy, const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W,
                                  const L& labels, Workspace<U>& ws, const Options& options = {}) {
  detail::check_forward_arguments<PP, DX, DW, L, U, LocalCommunicator>();
  LocalCommunicator local;
  detail::forward_rows(std::forward<PP>(policy), X, W, 0, W.rows(), labels, local, ws, options, true);
  return {detail::ForwardKey{}, policy, Eigen::Ref<const RowMatrix<U>>(W.derived()), ws, nullptr};
}

/// One rank's forward of the class-sharded loss: W_shard holds the global classes
/// [shard.offset, shard.offset + W_shard.rows()) of shard.num_classes; X and the (global)
/// labels are the whole batch on every rank. The loss is the same on every rank. Every rank
/// calls with the same policy, X, labels and options, in the same order.
template <typename PP, typename DX, typename DW, typename L, typename U, typename Comm>
Forward<std::decay_t<PP>, Comm> forward(PP&& policy, const Eigen::MatrixBase<DX>& X,
                                        const Eigen::MatrixBase<DW>& W_shard, const L& labels, Workspace<U>& ws,
                                        Shard<Comm> shard, const Options& options = {}) {
  detail::check_forward_arguments<PP, DX, DW, L, U, Comm>();
  static_assert(!detail::has_learnable_margins<std::decay_t<PP>>::value, MARGINLOSS_SHARDED_NO_LEARNABLE_MARGINS);
  detail::forward_rows(std::forward<PP>(policy), X, W_shard, shard.offset, shard.num_classes, labels, shard.comm, ws,
                       options, true);
  return {detail::ForwardKey{}, policy, Eigen::Ref<const RowMatrix<U>>(W_shard.derived()), ws, &shard.comm};
}

/// Writes the gradients times the upstream gradient grad_loss = dL_total/dL: dX (B x D; the
/// same on every rank when sharded), dW (W's rows) and, for learnable margins, dmargins (C).
/// W must still hold the forward's values (step the optimiser after the backward).
template <typename P, typename Comm>
void backward(const Forward<P, Comm>& fwd, typename P::value_type grad_loss,
              Gradients<typename P::value_type> out) {
  detail::check_backward_arguments(fwd.communicator(), [&] {
    detail::check_dmargins_given<P>(out);
    fwd.check_current();
  });
  LocalCommunicator local;
  auto& comm = [&]() -> auto& {
    if constexpr (std::is_same_v<Comm, LocalCommunicator>)
      return local;
    else
      return *fwd.communicator();
  }();
  detail::Engine::backward(fwd.policy(), fwd.weights(), comm, fwd.workspace(), grad_loss, out.dX, out.dW,
                           out.has_dmargins() ? out.dmargins.data() : nullptr, out.dmargins.size());
}

// ---------------------------------------------------------------------------------------------
// Forward and backward in one call (upstream gradient 1).

/// Writes into caller-owned gradients using `ws`: after the first step of a training loop
/// nothing is allocated. Returns the loss (with the regulariser for learnable margins).
template <typename PP, typename DX, typename DW, typename L, typename U>
detail::policy_value_t<PP> forward_backward(PP&& policy, const Eigen::MatrixBase<DX>& X,
                                            const Eigen::MatrixBase<DW>& W, const L& labels,
                                            Gradients<detail::policy_value_t<PP>> out, Workspace<U>& ws,
                                            const Options& options = {}) {
  detail::check_forward_arguments<PP, DX, DW, L, U, LocalCommunicator>();
  detail::check_dmargins_given<std::decay_t<PP>>(out);
  const auto fwd = forward(std::forward<PP>(policy), X, W, labels, ws, options);
  backward(fwd, detail::policy_value_t<PP>(1), out);
  return fwd.loss();
}

/// One rank's forward and backward of the class-sharded loss (see forward() with a Shard).
template <typename PP, typename DX, typename DW, typename L, typename U, typename Comm>
detail::policy_value_t<PP> forward_backward(PP&& policy, const Eigen::MatrixBase<DX>& X,
                                            const Eigen::MatrixBase<DW>& W_shard, const L& labels,
                                            Gradients<detail::policy_value_t<PP>> out, Workspace<U>& ws,
                                            Shard<Comm> shard, const Options& options = {}) {
  detail::check_forward_arguments<PP, DX, DW, L, U, Comm>();
  // No check of `out` before the forward: a rank that threw here would leave the others in the
  // forward's collectives; the backward checks it with every rank.
  const auto fwd = forward(std::forward<PP>(policy), X, W_shard, labels, ws, shard, options);
  backward(fwd, detail::policy_value_t<PP>(1), out);
  return fwd.loss();
}

/// Allocating convenience form: a Result with the loss, dX, dW (and dmargins).
template <typename PP, typename DX, typename DW, typename L>
Result<detail::policy_value_t<PP>> forward_backward(PP&& policy, const Eigen::MatrixBase<DX>& X,
                                                    const Eigen::MatrixBase<DW>& W, const L& labels,
                                                    const Options& options = {}) {
  using P = std::decay_t<PP>;
  using T = typename P::value_type;
  detail::check_forward_arguments<PP, DX, DW, L, T, LocalCommunicator>();
  Workspace<T> ws;
  Result<T> r;
  r.dX.resize(X.rows(), X.cols());
  r.dW.resize(W.rows(), W.cols());
  if constexpr (detail::has_learnable_margins<P>::value) r.dmargins.resize(W.rows());
  const auto fwd = forward(std::forward<PP>(policy), X, W, labels, ws, options);
  if constexpr (detail::has_learnable_margins<P>::value)
    backward(fwd, T(1), {r.dX, r.dW, r.dmargins});
  else
    backward(fwd, T(1), {r.dX, r.dW});
  r.loss = fwd.loss();
  r.regulariser = fwd.regulariser();
  return r;
}

// ---------------------------------------------------------------------------------------------
/// The target cosines t_i = cos(x_i, w_{y_i}) of a batch, clamped to [-1, 1], in O(B D): what
/// running statistics such as CurricularFace's tau are updated from before a forward. This form
/// writes into `out` (B entries) and allocates nothing.
template <typename DX, typename DW, typename L, typename Out>
void target_cosines(const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W, const L& labels, Out&& out) {
  using T = typename DX::Scalar;
  detail::check_row_major_matrix<DX, T>();
  detail::check_row_major_matrix<DW, T>();
  detail::check_output_matrix<Out, T>();
  const auto y = detail::label_argument<L>::view(labels);
  const Index B = X.rows(), D = X.cols(), C = W.rows();
  detail::check_batch(B, D, C, W.cols(), y.size());
  if (out.size() != B) detail::fail("out has ", out.size(), " entries but X has ", B, " rows");
  for (Index i = 0; i < B; ++i)
    if (!detail::label_in_range(y.coeff(i), C)) detail::fail_label(i, y.coeff(i), C);
  for (Index i = 0; i < B; ++i) {
    const double xn = detail::stable_row_norm(X.derived().row(i).data(), D);
    if (!detail::norm_accepted<T>(xn))
      detail::fail_bad_row<T>("X", X.derived(), i, xn);
    const auto k = static_cast<Index>(y.coeff(i));
    const double wn = detail::stable_row_norm(W.derived().row(k).data(), D);
    if (!detail::norm_accepted<T>(wn))
      detail::fail_bad_row<T>("W", W.derived(), k, wn);
    const T xi = static_cast<T>(1.0 / xn);
    // The engine's t_i (row_kernel.hpp), bit for bit.
    out.coeffRef(i) = detail::cosine_from_dot<T>((X.derived().row(i) * xi).dot(W.derived().row(k)), static_cast<T>(1.0 / wn));
  }
}

/// Allocating form: returns the B target cosines.
template <typename DX, typename DW, typename L>
Vector<typename DX::Scalar> target_cosines(const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DW>& W,
                                           const L& labels) {
  Vector<typename DX::Scalar> out(X.rows());
  target_cosines(X, W, labels, out);
  return out;
}

/// Loss and gradient of cosine_forward_backward().
template <typename T>
struct CosineResult {
  T loss;             ///< mean over the batch of the cross-entropy of the margined logits
  RowMatrix<T> dcos;  ///< dL/dcos, B x C
};

// ---------------------------------------------------------------------------------------------
// Cosine level, for engines that normalise and multiply themselves: takes the B x C cosine
// matrix (values are clamped to [-1, 1]; beyond 1 + 1e-3 in magnitude they are rejected as
// not cosines) and returns the loss and dL/dcos. Policies with a feature-norm scale need the
// per-row scales S_i (the feature norms) and also return dL/dS_i.

namespace detail {

template <typename PP, typename DC, typename DL, typename P = std::decay_t<PP>, typename T = typename P::value_type>
T cosine_engine(PP&& policy, const Eigen::MatrixBase<DC>& cos, const Eigen::MatrixBase<DL>& labels,
                const T* scales, Eigen::Ref<RowMatrix<T>> dcos, T* dscales) {
  static_assert(is_margin_policy_v<P>, "marginloss: P does not satisfy the policy contract (policies/common.hpp)");
  static_assert(!has_learnable_margins<P>::value,
                "marginloss: learnable margins need the labels' classes and the regulariser: use forward_backward()");
  check_row_major_matrix<DC, T>();
  check_label_vector<DL>();
  policy.validate();
  check_state_hook<PP>(policy);
  const Index B = cos.rows(), C = cos.cols();
  if (B == 0) fail("cos has 0 rows: the batch is empty");
  if (C == 0) fail("cos has 0 columns: there must be at least one class");
  if (labels.size() != B) fail("labels has ", labels.size(), " entries but cos has ", B, " rows");
  if constexpr (has_class_values<P>::value) check_class_values_on_host(policy, C);
  check_output_shape("dcos", dcos.rows(), dcos.cols(), B, C);
  if (policy.scale_is_feature_norm() && !scales)
    fail(P::name, " scales logits by the feature norm: pass the per-row scales to cosine_forward_backward()");
  for (Index i = 0; i < B; ++i) {
    const auto y = labels.derived().coeff(i);
    if (!label_in_range(y, C)) fail_label(i, y, C);
    if (scales && !(std::isfinite(scales[i]) && scales[i] > T(0)))
      fail("scales[", i, "] = ", scales[i], " must be finite and > 0");
  }
  dcos = cos.derived();
  // Validate and clamp in the output buffer, which the gradient then overwrites in place. A
  // row with a value that is not a cosine is left unclamped, so the message below can name the
  // value even when dcos aliases cos.
  Index bad_row = B;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) reduction(min : bad_row)
#endif
  for (Index i = 0; i < B; ++i) {
    T* c = dcos.row(i).data();
    bool ok = true;
    for (Index j = 0; j < C; ++j) ok = ok && std::fabs(c[j]) <= T(1.001);
    if (!ok) {
      bad_row = std::min(bad_row, i);
      continue;
    }
    for (Index j = 0; j < C; ++j) c[j] = clamp_cosine(c[j]);
  }
  if (bad_row < B)
    for (Index j = 0; j < C; ++j)
      if (!(std::fabs(dcos(bad_row, j)) <= T(1.001)))
        fail("cos(", bad_row, ", ", j, ") = ", dcos(bad_row, j), " is not a cosine (finite, |c| <= 1)");

  // State updated from the batch's (clamped) target cosines before it is used (CurricularFace).
  if constexpr (has_state_hook<P>::value && modifiable_policy_v<PP>)
    if (policy.updates_in_forward()) {
      double sum = 0;
      for (Index i = 0; i < B; ++i) sum += static_cast<double>(dcos(i, static_cast<Index>(labels.derived().coeff(i))));
      policy.update_with_target_mean(sum / static_cast<double>(B));
    }
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
    const T lse = finish_lse(shift, span_sum_exp(policy, terms, S, c, C, y, shift));
    total += static_cast<double>(row_loss(lse, terms, S));
    const double sz = span_gradient(policy, terms, S, c, C, y, lse, coef, static_cast<const T*>(nullptr), c);
    if (dscales) dscales[i] = policy.scale_is_feature_norm() ? dscale_share(sz, coef, S) : T(0);
    overflow = overflow || !all_finite(dcos.row(i)) || (dscales && !std::isfinite(dscales[i]));
  }
  const T loss = static_cast<T>(total / static_cast<double>(B));
  if (!std::isfinite(loss)) fail_not_representable("the loss");
  if (overflow) fail_not_representable("a gradient");
  return loss;
}

}  // namespace detail

/// The loss from a B x C matrix of cosines, for engines that normalise and multiply
/// themselves (values are clamped to [-1, 1]; beyond 1 + 1e-3 in magnitude they are rejected).
/// Fixed-scale policies: writes dL/dcos into `dcos` (B x C; it may alias `cos`, which is then
/// overwritten), returns the loss.
template <typename PP, typename DC, typename DL>
detail::policy_value_t<PP> cosine_forward_backward(PP&& policy, const Eigen::MatrixBase<DC>& cos,
                                                   const Eigen::MatrixBase<DL>& labels,
                                                   Eigen::Ref<RowMatrix<detail::policy_value_t<PP>>> dcos) {
  using T = detail::policy_value_t<PP>;
  return detail::cosine_engine(std::forward<PP>(policy), cos, labels, static_cast<const T*>(nullptr), dcos,
                               static_cast<T*>(nullptr));
}

/// Any policy, with the per-row scales (used by feature-norm policies, S_i = scales_i) and their
/// gradient dL/dscales (zero for fixed-scale policies).
template <typename PP, typename DC, typename DL>
detail::policy_value_t<PP> cosine_forward_backward(PP&& policy, const Eigen::MatrixBase<DC>& cos,
                                                   const Eigen::MatrixBase<DL>& labels,
                                                   const Eigen::Ref<const Vector<detail::policy_value_t<PP>>>& scales,
                                                   Eigen::Ref<RowMatrix<detail::policy_value_t<PP>>> dcos,
                                                   Eigen::Ref<Vector<detail::policy_value_t<PP>>> dscales) {
  if (scales.size() != cos.rows()) detail::fail("scales has ", scales.size(), " entries but cos has ", cos.rows(), " rows");
  if (dscales.size() != cos.rows()) detail::fail("dscales has ", dscales.size(), " entries but cos has ", cos.rows(), " rows");
  return detail::cosine_engine(std::forward<PP>(policy), cos, labels, scales.data(), dcos, dscales.data());
}

/// Allocating form for fixed-scale policies.
template <typename PP, typename DC, typename DL>
CosineResult<detail::policy_value_t<PP>> cosine_forward_backward(PP&& policy, const Eigen::MatrixBase<DC>& cos,
                                                                 const Eigen::MatrixBase<DL>& labels) {
  CosineResult<detail::policy_value_t<PP>> r;
  r.dcos.resize(cos.rows(), cos.cols());
  r.loss = cosine_forward_backward(std::forward<PP>(policy), cos, labels, r.dcos);
  return r;
}

MARGINLOSS_NAMESPACE_END
