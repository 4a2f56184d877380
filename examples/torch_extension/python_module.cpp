// The libtorch function as a Python extension module (pybind11, through torch/extension.h):
//
//   import torch, marginloss_torch
//   loss = marginloss_torch.arcface(x, w, labels, s=64.0, m=0.5)   # differentiable in x and w
//   loss.backward()
//
// x, w: contiguous CPU float32 or float64 tensors (the policy runs in their type); labels:
// int64. Built by CMake against Debian's libtorch-dev and python3-torch (see CMakeLists.txt).
#include <torch/extension.h>

#include "marginloss_torch.hpp"

namespace {

namespace ml = marginloss;

template <typename Make>
torch::Tensor dispatch(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels, Make make) {
  if (x.scalar_type() == torch::kFloat64) return marginloss_torch::margin_loss(x, w, labels, make(double{}));
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "marginloss_torch: x must be float32 or float64");
  return marginloss_torch::margin_loss(x, w, labels, make(float{}));
}

torch::Tensor normface(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels, double s) {
  return dispatch(x, w, labels, [&](auto zero) {
    using T = decltype(zero);
    return ml::NormFace<T>{T(s)};
  });
}

torch::Tensor cosface(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels, double s, double m) {
  return dispatch(x, w, labels, [&](auto zero) {
    using T = decltype(zero);
    return ml::CosFace<T>{T(s), T(m)};
  });
}

torch::Tensor arcface(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels, double s, double m) {
  return dispatch(x, w, labels, [&](auto zero) {
    using T = decltype(zero);
    return ml::ArcFace<T>{T(s), T(m)};
  });
}

torch::Tensor sphereface(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels, int m,
                         double lambda) {
  return dispatch(x, w, labels, [&](auto zero) {
    using T = decltype(zero);
    return ml::SphereFace<T>{m, T(lambda)};
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  namespace py = pybind11;
  mod.doc() = "marginloss margin-based softmax losses as torch autograd functions (CPU)";
  mod.def("normface", &normface, py::arg("x"), py::arg("w"), py::arg("labels"), py::arg("s") = 20.0);
  mod.def("cosface", &cosface, py::arg("x"), py::arg("w"), py::arg("labels"), py::arg("s") = 64.0,
          py::arg("m") = 0.35);
  mod.def("arcface", &arcface, py::arg("x"), py::arg("w"), py::arg("labels"), py::arg("s") = 64.0,
          py::arg("m") = 0.5);
  mod.def("sphereface", &sphereface, py::arg("x"), py::arg("w"), py::arg("labels"), py::arg("m") = 4,
          py::arg("lambda_") = 5.0);
  // marginloss::invalid_argument derives from std::invalid_argument: pybind11 raises ValueError.
}
