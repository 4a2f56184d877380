// marginloss._C: the C++ side of the Python package (pybind11 through torch/extension.h).
#include "bindings.hpp"

PYBIND11_MODULE(_C, m) {
  m.doc() = "marginloss: margin-based normalised-softmax losses as torch autograd functions (CPU). "
            "Use the marginloss package (marginloss.functional, marginloss.ArcFace, ...), not this module.";
#if defined(_OPENMP)
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
#if defined(__AVX512F__)
  m.attr("simd") = "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  m.attr("simd") = "avx2+fma";
#elif defined(__AVX__)
  m.attr("simd") = "avx";
#elif defined(__SSE4_2__)
  m.attr("simd") = "sse4.2";
#else
  m.attr("simd") = "sse2";
#endif
  m.attr("simd_instruction_sets") = Eigen::SimdInstructionSetsInUse();
  // The library computing the float products: "oneDNN" when built with it (setup.py's
  // MARGINLOSS_PRODUCTS, or the CMake build's MARGINLOSS_PRODUCTS), else "Eigen"/"BLAS".
  m.attr("products") = marginloss::products_backend<float>();
  marginloss_python::register_basic(m);
  marginloss_python::register_mining(m);
  marginloss_python::register_margins(m);
  // marginloss::invalid_argument derives from std::invalid_argument: pybind11 raises ValueError.
}
