// The mining policies: SV-Softmax, MV-Softmax, CurricularFace, AMM-Softmax.
#include "bindings.hpp"

namespace marginloss_python {

namespace {

using Tensor = torch::Tensor;
#define ML_T using T = decltype(zero)

Tensor sv_softmax(const Tensor& x, const Tensor& w, const Tensor& y, double s, double m, double t, int target,
                  int fallback, int gradient) {
  return run(x, w, y, [&](auto zero) { ML_T; return make_sv_softmax<T>(s, m, t, target, fallback, gradient); });
}

Tensor mv_softmax(const Tensor& x, const Tensor& w, const Tensor& y, double s, double m, double t, int target,
                  int variant, int fallback, bool conditional_margin, int gradient) {
  return run(x, w, y, [&](auto zero) {
    ML_T;
    return make_mv_softmax<T>(s, m, t, target, variant, fallback, conditional_margin, gradient);
  });
}

Tensor curricular_face(const Tensor& x, const Tensor& w, const Tensor& y, double s, double m, double tau,
                       double momentum, int fallback, int gradient) {
  return run(x, w, y,
             [&](auto zero) { ML_T; return make_curricular_face<T>(s, m, tau, momentum, fallback, gradient); });
}

Tensor amm_softmax(const Tensor& x, const Tensor& w, const Tensor& y, double s, double m, double m_h, int fallback,
                   int gradient) {
  return run(x, w, y, [&](auto zero) { ML_T; return make_amm_softmax<T>(s, m, m_h, fallback, gradient); });
}

#undef ML_T

}  // namespace

void register_mining(py::module_& mod) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  const auto x = py::arg("x"), w = py::arg("w"), y = py::arg("labels");
  mod.def("sv_softmax", &sv_softmax, x, w, y, py::arg("s"), py::arg("m"), py::arg("t"), py::arg("target"),
          py::arg("fallback"), py::arg("gradient"), nogil);
  mod.def("mv_softmax", &mv_softmax, x, w, y, py::arg("s"), py::arg("m"), py::arg("t"), py::arg("target"),
          py::arg("variant"), py::arg("fallback"), py::arg("conditional_margin"), py::arg("gradient"), nogil);
  mod.def("curricular_face", &curricular_face, x, w, y, py::arg("s"), py::arg("m"), py::arg("tau"),
          py::arg("momentum"), py::arg("fallback"), py::arg("gradient"), nogil);
  mod.def("amm_softmax", &amm_softmax, x, w, y, py::arg("s"), py::arg("m"), py::arg("m_h"), py::arg("fallback"),
          py::arg("gradient"), nogil);
}

}  // namespace marginloss_python
