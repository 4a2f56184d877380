// marginloss._C: what the binding sources share. Each policy's function takes every member of
// the C++ policy (make_policy.hpp; the Python layer, marginloss/functional.py, maps enumeration
// names to their values and checks the tensors first) and dispatches on x's dtype.
#pragma once

#include <torch/extension.h>

#include "make_policy.hpp"
#include "marginloss_torch.hpp"

namespace marginloss_python {

namespace ml = marginloss;
namespace py = pybind11;

// The policy built by make(T{}) for x's dtype, applied to (x, w, labels).
template <typename Make>
torch::Tensor run(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels, Make make) {
  TORCH_CHECK(x.defined(), "marginloss: x is undefined");
  if (x.scalar_type() == torch::kFloat64) return marginloss_torch::margin_loss(x, w, labels, make(double{}));
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "marginloss: x must be float32 or float64, got ", x.scalar_type());
  return marginloss_torch::margin_loss(x, w, labels, make(float{}));
}

// The same with fixed per-class margins replacing the base policy's m (ml::ClassMargins): the
// policy views the margins tensor's memory (marginloss_torch::class_margins_loss).
template <typename Make>
torch::Tensor run_class_margins(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels,
                                const torch::Tensor& margins, Make make) {
  TORCH_CHECK(x.defined(), "marginloss: x is undefined");
  if (x.scalar_type() == torch::kFloat64)
    return marginloss_torch::class_margins_loss(x, w, labels, margins, make(double{}));
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "marginloss: x must be float32 or float64, got ", x.scalar_type());
  return marginloss_torch::class_margins_loss(x, w, labels, margins, make(float{}));
}

void register_basic(py::module_& m);    // normface, cosface, arcface, combined_margin, sphereface
void register_mining(py::module_& m);   // sv_softmax, mv_softmax, curricular_face, amm_softmax
void register_margins(py::module_& m);  // adaptive_margin, class_margins_*, target_cosines

}  // namespace marginloss_python
