// marginloss as a libtorch autograd function.
//
//   torch::Tensor loss = marginloss_torch::margin_loss(x, w, labels, ml::ArcFace<double>{64, 0.5});
//   loss.backward();   // x.grad, w.grad (and whatever x was computed from)
//
// x (B x D) and w (C x D) are CPU tensors of the policy's scalar type (float or double),
// contiguous and row-major; labels is a 1-D int64 CPU tensor. The tensors' memory is mapped
// with Eigen::Map, nothing is copied and nothing is normalised here: the library normalises the
// raw x and w itself and returns the gradients with respect to them. The forward runs
// ml::forward and keeps its workspace in the autograd context; the backward runs ml::backward
// with the upstream gradient. One backward per forward (no retain_graph double backward, no
// second-order gradients).
#pragma once

#include <marginloss/marginloss.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <type_traits>

namespace marginloss_torch {

namespace ml = marginloss;

template <typename T>
using Map = Eigen::Map<ml::RowMatrix<T>>;
template <typename T>
using ConstMap = Eigen::Map<const ml::RowMatrix<T>>;
using LabelMap = Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>>;

namespace detail {

template <typename T>
void check_matrix(const torch::Tensor& t, const char* name) {
  constexpr auto dtype = std::is_same<T, double>::value ? torch::kFloat64 : torch::kFloat32;
  TORCH_CHECK(t.defined(), "margin_loss: ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "margin_loss: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 2, "margin_loss: ", name, " must be 2-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == dtype, "margin_loss: ", name, " must be ", dtype, " (the policy's type), got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "margin_loss: ", name, " must be contiguous (row-major); call .contiguous()");
}

inline void check_labels(const torch::Tensor& t) {
  TORCH_CHECK(t.defined() && t.device().is_cpu() && t.dim() == 1 && t.scalar_type() == torch::kInt64 &&
                  t.is_contiguous(),
              "margin_loss: labels must be a contiguous 1-D int64 CPU tensor");
}

// What the backward needs, kept in the autograd context as an IValue capsule: the policy and
// the workspace the forward filled (normalised features, norms, the B x C cosines).
template <typename Policy>
struct State : torch::CustomClassHolder {
  explicit State(const Policy& p) : policy(p) {}
  Policy policy;
  ml::Workspace<typename Policy::value_type> ws;
};

}  // namespace detail

template <typename Policy>
class MarginLoss : public torch::autograd::Function<MarginLoss<Policy>> {
 public:
  using T = typename Policy::value_type;

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& labels, const Policy& policy) {
    detail::check_matrix<T>(x, "x");
    detail::check_matrix<T>(w, "w");
    detail::check_labels(labels);
    auto state = c10::make_intrusive<detail::State<Policy>>(policy);
    const ConstMap<T> X(x.data_ptr<T>(), x.size(0), x.size(1));
    const ConstMap<T> W(w.data_ptr<T>(), w.size(0), w.size(1));
    const LabelMap y(labels.data_ptr<std::int64_t>(), labels.size(0));
    const T loss = ml::forward(policy, X, W, y, state->ws);  // throws marginloss::invalid_argument
    ctx->save_for_backward({w});
    ctx->saved_data["state"] = c10::IValue::make_capsule(std::move(state));
    return torch::scalar_tensor(loss, x.options());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const torch::Tensor w = ctx->get_saved_variables()[0];
    auto state = c10::static_intrusive_pointer_cast<detail::State<Policy>>(ctx->saved_data["state"].toCapsule());
    const T grad_loss = grad_outputs[0].item<T>();
    torch::Tensor dx = torch::empty({state->ws.batch(), state->ws.dim()}, w.options());
    torch::Tensor dw = torch::empty_like(w);
    const ConstMap<T> W(w.data_ptr<T>(), w.size(0), w.size(1));
    Map<T> dX(dx.data_ptr<T>(), dx.size(0), dx.size(1));
    Map<T> dW(dw.data_ptr<T>(), dw.size(0), dw.size(1));
    ml::backward(state->policy, W, state->ws, grad_loss, dX, dW);
    // One gradient per forward input: x, w, labels (none), policy (none).
    return {dx, dw, torch::Tensor(), torch::Tensor()};
  }
};

// The batch-mean margin loss of x against class weights w; differentiable in x and w.
template <typename Policy>
torch::Tensor margin_loss(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels,
                          const Policy& policy) {
  return MarginLoss<Policy>::apply(x, w, labels, policy);
}

}  // namespace marginloss_torch
