// NormFace, CosFace, ArcFace, the combined margin and SphereFace.
#include "bindings.hpp"

namespace marginloss_python {

namespace {

using Tensor = torch::Tensor;
#define ML_T using T = decltype(zero)

Tensor normface(const Tensor& x, const Tensor& w, const Tensor& y, double s) {
  return run(x, w, y, [&](auto zero) { ML_T; return make_normface<T>(s); });
}

Tensor cosface(const Tensor& x, const Tensor& w, const Tensor& y, double s, double m, bool conditional_margin) {
  return run(x, w, y, [&](auto zero) { ML_T; return make_cosface<T>(s, m, conditional_margin); });
}

Tensor arcface(const Tensor& x, const Tensor& w, const Tensor& y, double s, double m, int fallback, int gradient) {
  return run(x, w, y, [&](auto zero) { ML_T; return make_arcface<T>(s, m, fallback, gradient); });
}

Tensor combined_margin(const Tensor& x, const Tensor& w, const Tensor& y, double s, double m1, double m2, double m3,
                       int fallback, int gradient) {
  return run(x, w, y, [&](auto zero) { ML_T; return make_combined_margin<T>(s, m1, m2, m3, fallback, gradient); });
}

Tensor sphereface(const Tensor& x, const Tensor& w, const Tensor& y, int m, double lambda, int scale_mode, double s) {
  return run(x, w, y, [&](auto zero) { ML_T; return make_sphereface<T>(m, lambda, scale_mode, s); });
}

#undef ML_T

}  // namespace

void register_basic(py::module_& mod) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  const auto x = py::arg("x"), w = py::arg("w"), y = py::arg("labels");
  mod.def("normface", &normface, x, w, y, py::arg("s"), nogil);
  mod.def("cosface", &cosface, x, w, y, py::arg("s"), py::arg("m"), py::arg("conditional_margin"), nogil);
  mod.def("arcface", &arcface, x, w, y, py::arg("s"), py::arg("m"), py::arg("fallback"), py::arg("gradient"), nogil);
  mod.def("combined_margin", &combined_margin, x, w, y, py::arg("s"), py::arg("m1"), py::arg("m2"), py::arg("m3"),
          py::arg("fallback"), py::arg("gradient"), nogil);
  mod.def("sphereface", &sphereface, x, w, y, py::arg("m"), py::arg("lambda_"), py::arg("scale_mode"), py::arg("s"),
          nogil);
}

}  // namespace marginloss_python
