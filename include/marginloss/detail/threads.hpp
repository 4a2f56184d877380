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

// Called by each thread of the engine's parallel regions before its tiles' products: parallel
// regions this thread opens from now on (Eigen's products parallelise themselves, oneDNN's GEMM
// opens its own) get one thread, so a tile's products are sequential. OpenMP already does this
// unless the caller enabled nesting (OMP_MAX_ACTIVE_LEVELS > 1, omp_set_max_active_levels);
// then each of 2 threads opened 2 more on 2 cores, and the tiles' products took 1.8-2.0x as long
// (Eigen and oneDNN alike, 256 x 512 x 100k, bench/README.md). Inside a region this sets the
// current task's thread count only: the caller's is unchanged after the region.
inline void serial_nested_regions() {
#if defined(_OPENMP)
  omp_set_num_threads(1);
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
