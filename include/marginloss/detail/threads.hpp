// marginloss: the OpenMP queries the engine needs, with serial fallbacks when OpenMP is off.
#pragma once

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../config.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// Threads a parallel region started now would get (1 inside a parallel region of the caller:
// the engine does not nest).
inline int max_threads() {
#if defined(_OPENMP)
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

inline int thread_index() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
