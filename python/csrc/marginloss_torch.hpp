// marginloss as a libtorch autograd function: the one wrapper shared by the Python package
// (python/csrc/*.cpp, module marginloss._C) and the libtorch example (examples/torch_extension).
//
//   torch::Tensor loss = marginloss_torch::margin_loss(x, w, labels, ml::ArcFace<double>{64, 0.5});
//   loss.backward();   // x.grad, w.grad (and whatever x was computed from)
//
//   // learnable per-class margins (AdaM-Softmax): also differentiable in `margins`
//   torch::Tensor loss = marginloss_torch::adaptive_margin_loss(x, w, labels, margins, ml::AdaptiveMargin<double>{});
//   // fixed per-class margins on a base policy with a margin m (ml::ClassMargins)
//   torch::Tensor loss = marginloss_torch::class_margins_loss(x, w, labels, margins, ml::ArcFace<double>{64});
//
// x (B x D) and w (C x D) are CPU tensors of the policy's scalar type (float or double); labels
// is a 1-D int32 or int64 CPU tensor (mapped as it is: the library takes either). Contiguous
// tensors are mapped with Eigen::Map, nothing is copied; a non-contiguous x, w or labels is
// copied once into a contiguous tensor (Tensor::contiguous), which the forward keeps for the
// backward in the case of w. Nothing is normalised here: the library normalises the raw x and w
// itself and returns the gradients with respect to them. The forward runs ml::forward and keeps
// its workspace and the ml::Forward context it returns in the autograd context; the backward
// runs ml::backward(fwd, grad_loss, {dX, dW}) with the upstream gradient. One backward per forward (no retain_graph double backward, no second-order
// gradients). The library runs as many OpenMP threads as torch's intra-op pool
// (torch::get_num_threads), so torch.set_num_threads governs both.
//
// Per-class margins (AdaptiveMargin, ClassMargins): the policy holds a view (ml::ClassValues)
// of the margins tensor's memory, not a copy. The tensor is taken detached and contiguous (a copy
// only when it is not contiguous), of the policy's dtype, and the autograd context keeps it
// alive until the backward; it is saved for the backward, so an in-place change of the margins
// between forward and backward (an optimiser step before loss.backward()) is reported by
// autograd's usual "modified by an inplace operation" error instead of silently mixing values.
//
// Errors: a tensor of the wrong device, dtype, rank or layout fails a TORCH_CHECK (c10::Error);
// every other bad input (shapes, labels out of range, zero or non-finite rows,
// hyper-parameters) throws marginloss::invalid_argument (a std::invalid_argument) from the
// library, naming the argument and its value.
#pragma once

#include <marginloss/marginloss.hpp>
#include <torch/torch.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace marginloss_torch {

namespace ml = marginloss;

template <typename T>
using Map = Eigen::Map<ml::RowMatrix<T>>;
template <typename T>
using ConstMap = Eigen::Map<const ml::RowMatrix<T>>;
template <typename L>
using LabelMap = Eigen::Map<const Eigen::Matrix<L, Eigen::Dynamic, 1>>;

namespace detail {

template <typename T>
constexpr torch::ScalarType dtype_of() {
  return std::is_same<T, double>::value ? torch::kFloat64 : torch::kFloat32;
}

inline void check_cpu(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "marginloss: ", name, " is a ", t.device(),
              " tensor; this wrapper runs the CPU library and takes CPU tensors only");
}

// x or w: a defined 2-D CPU tensor of the policy's type; returned contiguous (a copy only when
// it is not already).
template <typename T>
torch::Tensor matrix_arg(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), "marginloss: ", name, " is undefined");
  check_cpu(t, name);
  TORCH_CHECK(t.dim() == 2, "marginloss: ", name, " must be 2-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == dtype_of<T>(), "marginloss: ", name, " must be ", dtype_of<T>(),
              " (the policy's type), got ", t.scalar_type());
  return t.contiguous();
}

inline torch::Tensor labels_arg(const torch::Tensor& t) {
  TORCH_CHECK(t.defined(), "marginloss: labels is undefined");
  check_cpu(t, "labels");
  TORCH_CHECK(t.dim() == 1, "marginloss: labels must be 1-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == torch::kInt64 || t.scalar_type() == torch::kInt32,
              "marginloss: labels must be int64 or int32, got ", t.scalar_type());
  return t.contiguous();
}

// Calls f with an Eigen map of the labels in their own integer type.
template <typename F>
decltype(auto) with_labels(const torch::Tensor& labels, F&& f) {
  if (labels.scalar_type() == torch::kInt32)
    return f(LabelMap<std::int32_t>(labels.data_ptr<std::int32_t>(), labels.size(0)));
  return f(LabelMap<std::int64_t>(labels.data_ptr<std::int64_t>(), labels.size(0)));
}

// A 1-D CPU tensor of per-class values (margins) of the policy's type, detached and contiguous
// (a copy only when it is not): the tensor whose memory the policy's ml::ClassValues views. The
// caller keeps the returned tensor alive as long as the policy is used.
template <typename T>
torch::Tensor class_values_arg(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), "marginloss: ", name, " is undefined");
  check_cpu(t, name);
  TORCH_CHECK(t.dim() == 1, "marginloss: ", name, " must be 1-D (one entry per class), got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == dtype_of<T>(), "marginloss: ", name, " must be ", dtype_of<T>(),
              " (the policy's type), got ", t.scalar_type());
  return t.detach().contiguous();
}
// The view of such a tensor.
template <typename T>
ml::ClassValues<T> class_values_of(const torch::Tensor& c) {
  return ml::ClassValues<T>(c.data_ptr<T>(), static_cast<ml::Index>(c.size(0)));
}

// The library's OpenMP regions take torch's intra-op thread count. (Setting it per call also
// covers a torch with its own, separately linked OpenMP runtime, such as PyPI's wheels.)
inline void follow_torch_threads() {
#if defined(_OPENMP)
  const int n = torch::get_num_threads();
  if (n >= 1 && omp_get_max_threads() != n) omp_set_num_threads(n);
#endif
}

// Workspaces are reused across calls: a forward takes one from this pool, the autograd context
// holds it until the graph is freed (after the backward), then it returns here. A training loop
// therefore allocates its B x C cosine buffer once, not at every step.
template <typename T>
class WorkspacePool {
 public:
  static std::unique_ptr<ml::Workspace<T>> take() {
    auto& p = instance();
    std::lock_guard<std::mutex> lock(p.mutex_);
    if (p.free_.empty()) return std::make_unique<ml::Workspace<T>>();
    auto ws = std::move(p.free_.back());
    p.free_.pop_back();
    return ws;
  }
  static void give_back(std::unique_ptr<ml::Workspace<T>> ws) {
    auto& p = instance();
    std::lock_guard<std::mutex> lock(p.mutex_);
    if (p.free_.size() < kKeep) p.free_.push_back(std::move(ws));
  }

 private:
  static constexpr std::size_t kKeep = 2;  // forwards in flight rarely exceed this
  static WorkspacePool& instance() {
    static WorkspacePool pool;
    return pool;
  }
  std::mutex mutex_;
  std::vector<std::unique_ptr<ml::Workspace<T>>> free_;
};

// What the backward needs, kept in the autograd context as an IValue capsule: the policy, the
// margins tensor its view points into (per-class-margin policies; undefined otherwise), the
// workspace the forward filled (normalised features, norms, the B x C cosines) and the forward's
// context (ml::Forward: the policy as the forward used it and a view of w, whose tensor the
// autograd context saves).
template <typename Policy>
struct State : torch::CustomClassHolder {
  using T = typename Policy::value_type;
  State(Policy p, torch::Tensor m) : policy(std::move(p)), margins(std::move(m)), ws(WorkspacePool<T>::take()) {}
  ~State() override {
    if (ws) WorkspacePool<T>::give_back(std::move(ws));
  }
  Policy policy;
  torch::Tensor margins;  // owns the memory policy.margins views
  std::unique_ptr<ml::Workspace<T>> ws;
  std::optional<ml::Forward<Policy>> fwd;  // refers to *ws and to w's memory
};

}  // namespace detail

// The autograd function. `margins` is used by policies with per-class margins: the policy's
// view (policy.margins) is pointed at the tensor's memory (AdaptiveMargin also returns
// dL/dmargins; ClassMargins' margins are constants); other policies ignore it (pass an empty
// tensor: autograd's apply does not take undefined tensors).
template <typename Policy>
class MarginLoss : public torch::autograd::Function<MarginLoss<Policy>> {
 public:
  using T = typename Policy::value_type;
  static constexpr bool learnable = ml::detail::has_learnable_margins<Policy>::value;
  static constexpr bool per_class = ml::detail::has_class_values<Policy>::value;

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& labels, const torch::Tensor& margins,
                               Policy policy) {
    const torch::Tensor xc = detail::matrix_arg<T>(x, "x");
    const torch::Tensor wc = detail::matrix_arg<T>(w, "w");
    const torch::Tensor yc = detail::labels_arg(labels);
    torch::Tensor mc;
    if constexpr (per_class) {
      mc = detail::class_values_arg<T>(margins, "margins");
      policy.margins = detail::class_values_of<T>(mc);  // a view: mc lives in the state
    }
    detail::follow_torch_threads();
    auto state = c10::make_intrusive<detail::State<Policy>>(std::move(policy), mc);
    const ConstMap<T> X(xc.data_ptr<T>(), xc.size(0), xc.size(1));
    const ConstMap<T> W(wc.data_ptr<T>(), wc.size(0), wc.size(1));
    // Throws marginloss::invalid_argument on bad shapes, labels, rows or parameters.
    state->fwd.emplace(detail::with_labels(yc, [&](const auto& y) { return ml::forward(state->policy, X, W, y, *state->ws); }));
    const T loss = state->fwd->loss();
    // The margins too (per-class policies): autograd then rejects a backward after an in-place
    // change of them, which the policy's view would otherwise see.
    if constexpr (per_class)
      ctx->save_for_backward({wc, mc});
    else
      ctx->save_for_backward({wc});
    ctx->saved_data["state"] = c10::IValue::make_capsule(std::move(state));
    return torch::scalar_tensor(loss, x.options());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();  // checks the saved tensors' versions
    const torch::Tensor w = saved[0];
    auto state = c10::static_intrusive_pointer_cast<detail::State<Policy>>(ctx->saved_data["state"].toCapsule());
    TORCH_CHECK(state->ws && state->ws->holds_forward() && state->fwd,
                "marginloss: backward through the same loss twice is not supported (one backward per forward)");
    const T grad_loss = grad_outputs[0].defined() ? grad_outputs[0].item<T>() : T(0);
    detail::follow_torch_threads();
    torch::Tensor dx = torch::empty({state->ws->batch(), state->ws->dim()}, w.options());
    torch::Tensor dw = torch::empty_like(w);
    Map<T> dX(dx.data_ptr<T>(), dx.size(0), dx.size(1));
    Map<T> dW(dw.data_ptr<T>(), dw.size(0), dw.size(1));
    torch::Tensor dm;
    if constexpr (learnable) {
      dm = torch::empty({state->ws->num_classes()}, w.options());
      Eigen::Map<ml::Vector<T>> dM(dm.data_ptr<T>(), dm.size(0));
      ml::backward(*state->fwd, grad_loss, {dX, dW, dM});
    } else {
      ml::backward(*state->fwd, grad_loss, {dX, dW});
    }
    // Done with the workspace: back to the pool now rather than when the graph is freed (the
    // context, which refers to it, goes first).
    state->fwd.reset();
    detail::WorkspacePool<T>::give_back(std::move(state->ws));
    // One gradient per forward input: x, w, labels (none), margins, policy (none).
    return {dx, dw, torch::Tensor(), dm, torch::Tensor()};
  }
};

// The batch-mean margin loss of x against class weights w; differentiable in x and w.
template <typename Policy>
torch::Tensor margin_loss(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels,
                          const Policy& policy) {
  static_assert(!ml::detail::has_learnable_margins<Policy>::value,
                "marginloss_torch: policies with learnable margins take them as a tensor: use adaptive_margin_loss");
  static_assert(!ml::detail::has_class_values<Policy>::value,
                "marginloss_torch: policies with per-class margins take them as a tensor: use class_margins_loss");
  return MarginLoss<Policy>::apply(x, w, labels, torch::empty({0}, torch::kFloat64), policy);
}

// Fixed per-class margins (ml::ClassMargins) on `base` (a policy with a margin member m): the row
// of sample i uses m = margins[y_i], margins a tensor of C entries of the policy's type
// (constants: no gradient reaches them). Differentiable in x and w.
template <typename Base>
torch::Tensor class_margins_loss(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels,
                                 const torch::Tensor& margins, const Base& base) {
  return MarginLoss<ml::ClassMargins<Base>>::apply(x, w, labels, margins, ml::ClassMargins<Base>{base, {}});
}

// AdaM-Softmax with the per-class margins as a tensor (C entries, the policy's type): the
// loss (softmax term plus the policy's regulariser, as the forward's loss() has it) is
// differentiable in x, w and margins. policy.margins is ignored (replaced by a view of `margins`).
template <typename T>
torch::Tensor adaptive_margin_loss(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels,
                                   const torch::Tensor& margins, ml::AdaptiveMargin<T> policy) {
  return MarginLoss<ml::AdaptiveMargin<T>>::apply(x, w, labels, margins, std::move(policy));
}

// The target cosines t_i = cos(x_i, w_{y_i}) (clamped to [-1, 1]), not differentiated: what
// CurricularFace's tau is updated from. B entries of x's type.
inline torch::Tensor target_cosines(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels) {
  TORCH_CHECK(x.defined() && (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64),
              "marginloss: x must be float32 or float64");
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const torch::Tensor xc = detail::matrix_arg<T>(x, "x");
    const torch::Tensor wc = detail::matrix_arg<T>(w, "w");
    const torch::Tensor yc = detail::labels_arg(labels);
    const ConstMap<T> X(xc.data_ptr<T>(), xc.size(0), xc.size(1));
    const ConstMap<T> W(wc.data_ptr<T>(), wc.size(0), wc.size(1));
    const ml::Vector<T> t = detail::with_labels(yc, [&](const auto& y) { return ml::target_cosines(X, W, y); });
    torch::Tensor out = torch::empty({t.size()}, x.options().requires_grad(false));
    std::copy(t.data(), t.data() + t.size(), out.data_ptr<T>());
    return out;
  };
  return x.scalar_type() == torch::kFloat64 ? run(double{}) : run(float{});
}

}  // namespace marginloss_torch
