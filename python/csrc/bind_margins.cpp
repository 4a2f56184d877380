// Per-class margins: AdaM-Softmax (learnable, differentiable in the margins tensor) and fixed
// per-class margins on any policy with a margin m (ml::class_margins); CurricularFace's target
// cosines.
#include "bindings.hpp"

namespace marginloss_python {

namespace {

using Tensor = torch::Tensor;
#define ML_T using T = decltype(zero)

Tensor adaptive_margin(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& margins, double s,
                       double lambda_m, int scope) {
  TORCH_CHECK(x.defined(), "marginloss: x is undefined");
  if (x.scalar_type() == torch::kFloat64)
    return marginloss_torch::adaptive_margin_loss(x, w, y, margins, make_adaptive_margin<double>(s, lambda_m, scope));
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "marginloss: x must be float32 or float64, got ", x.scalar_type());
  return marginloss_torch::adaptive_margin_loss(x, w, y, margins, make_adaptive_margin<float>(s, lambda_m, scope));
}

Tensor cm_cosface(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& margins, double s,
                  bool conditional_margin) {
  return run_class_margins(x, w, y, margins, [&](auto zero) { ML_T; return make_cosface<T>(s, 0, conditional_margin); });
}

Tensor cm_arcface(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& margins, double s, int fallback,
                  int gradient) {
  return run_class_margins(x, w, y, margins, [&](auto zero) { ML_T; return make_arcface<T>(s, 0, fallback, gradient); });
}

Tensor cm_sv_softmax(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& margins, double s, double t,
                     int target, int fallback, int gradient) {
  return run_class_margins(x, w, y, margins,
                           [&](auto zero) { ML_T; return make_sv_softmax<T>(s, 0, t, target, fallback, gradient); });
}

Tensor cm_mv_softmax(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& margins, double s, double t,
                     int target, int variant, int fallback, bool conditional_margin, int gradient) {
  return run_class_margins(x, w, y, margins, [&](auto zero) {
    ML_T;
    return make_mv_softmax<T>(s, 0, t, target, variant, fallback, conditional_margin, gradient);
  });
}

Tensor cm_curricular_face(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& margins, double s,
                          double tau, double momentum, int fallback, int gradient) {
  return run_class_margins(x, w, y, margins, [&](auto zero) {
    ML_T;
    return make_curricular_face<T>(s, 0, tau, momentum, fallback, gradient);
  });
}

Tensor cm_amm_softmax(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& margins, double s, double m_h,
                      int fallback, int gradient) {
  return run_class_margins(x, w, y, margins,
                           [&](auto zero) { ML_T; return make_amm_softmax<T>(s, 0, m_h, fallback, gradient); });
}

#undef ML_T

}  // namespace

void register_margins(py::module_& mod) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  const auto x = py::arg("x"), w = py::arg("w"), y = py::arg("labels"), mg = py::arg("margins");
  mod.def("adaptive_margin", &adaptive_margin, x, w, y, mg, py::arg("s"), py::arg("lambda_m"), py::arg("scope"), nogil);
  // class_margins on each policy with a margin member m (the base's m is the per-class margin).
  mod.def("class_margins_cosface", &cm_cosface, x, w, y, mg, py::arg("s"), py::arg("conditional_margin"), nogil);
  mod.def("class_margins_arcface", &cm_arcface, x, w, y, mg, py::arg("s"), py::arg("fallback"), py::arg("gradient"),
          nogil);
  mod.def("class_margins_sv_softmax", &cm_sv_softmax, x, w, y, mg, py::arg("s"), py::arg("t"), py::arg("target"),
          py::arg("fallback"), py::arg("gradient"), nogil);
  mod.def("class_margins_mv_softmax", &cm_mv_softmax, x, w, y, mg, py::arg("s"), py::arg("t"), py::arg("target"),
          py::arg("variant"), py::arg("fallback"), py::arg("conditional_margin"), py::arg("gradient"), nogil);
  mod.def("class_margins_curricular_face", &cm_curricular_face, x, w, y, mg, py::arg("s"), py::arg("tau"),
          py::arg("momentum"), py::arg("fallback"), py::arg("gradient"), nogil);
  mod.def("class_margins_amm_softmax", &cm_amm_softmax, x, w, y, mg, py::arg("s"), py::arg("m_h"),
          py::arg("fallback"), py::arg("gradient"), nogil);
  mod.def("target_cosines", &marginloss_torch::target_cosines, x, w, y, nogil);
}

}  // namespace marginloss_python
