// marginloss benchmarks: what the numbers were measured with (threads, SIMD, BLAS), recorded
// in the benchmark's context so a JSON file says how it was made.
#pragma once

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstdlib>
#include <string>

#include <marginloss/products.hpp>

#if defined(MARGINLOSS_BENCH_ONEDNN)
#include <dnnl.h>
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

// OpenBLAS's own query functions, when the binary links OpenBLAS (marginloss::blas, or the
// benchmark's BLAS column): weak, so the Eigen-only build and other BLAS libraries link without them.
#if (defined(EIGEN_USE_BLAS) || defined(MARGINLOSS_BENCH_BLAS)) && defined(__GNUC__)
extern "C" int openblas_get_num_threads(void) __attribute__((weak));
extern "C" char* openblas_get_config(void) __attribute__((weak));
extern "C" char* openblas_get_corename(void) __attribute__((weak));
extern "C" int openblas_get_parallel(void) __attribute__((weak));
#endif

namespace marginloss_bench {

inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string(fallback);
}

inline void add_context() {
  benchmark::AddCustomContext("eigen_version", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                                   std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                                   std::to_string(EIGEN_MINOR_VERSION));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
#if defined(_OPENMP)
  benchmark::AddCustomContext("omp_max_threads", std::to_string(omp_get_max_threads()));
#else
  benchmark::AddCustomContext("omp_max_threads", "no OpenMP");
#endif
  benchmark::AddCustomContext("OMP_NUM_THREADS", env_or("OMP_NUM_THREADS", "(unset)"));
  // The loss's product backend (marginloss::products_backend, chosen by the linked target).
  benchmark::AddCustomContext("products", marginloss::products_backend<float>());
#if defined(MARGINLOSS_BENCH_ONEDNN)
  if (const dnnl_version_t* v = dnnl_version())
    benchmark::AddCustomContext("onednn_version", std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                                                      std::to_string(v->patch) + (v->cpu_runtime == DNNL_RUNTIME_OMP ? " (OpenMP)" : " (not OpenMP)"));
#endif
#if (defined(EIGEN_USE_BLAS) || defined(MARGINLOSS_BENCH_BLAS)) && defined(__GNUC__)
  if (openblas_get_config) benchmark::AddCustomContext("openblas_config", openblas_get_config());
  if (openblas_get_corename) benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  if (openblas_get_num_threads)
    benchmark::AddCustomContext("openblas_threads", std::to_string(openblas_get_num_threads()));
  if (openblas_get_parallel)
    benchmark::AddCustomContext("openblas_parallel",
                                openblas_get_parallel() == 2 ? "openmp" : (openblas_get_parallel() == 1 ? "pthreads" : "serial"));
  benchmark::AddCustomContext("OPENBLAS_NUM_THREADS", env_or("OPENBLAS_NUM_THREADS", "(unset)"));
#endif
#if defined(MARGINLOSS_BENCH_FLAGS)
  benchmark::AddCustomContext("cxx_flags", MARGINLOSS_BENCH_FLAGS);
#endif
}

}  // namespace marginloss_bench
