// marginloss: L2 norms of the rows of X and W, with the checks that make normalisation safe.
#pragma once

#include <cmath>
#include <limits>

#include "../errors.hpp"
#include "../types.hpp"
#include "checks.hpp"
#include "norm_range.hpp"
#include "row_kernel.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// ||row|| in double, by one thread (row_kernel.hpp's rescaled_row_norm, shared with the GPU).
template <typename T>
inline double stable_row_norm(const T* row, Index n) {
  return rescaled_row_norm(row, n, 0, 1, SerialReduce{});
}

// Reports the first bad row of `name` (sequentially, so the message does not depend on threads).
template <typename T, typename RowsRef>
[[noreturn]] inline void fail_bad_row(const char* name, const RowsRef& m, Index i, double norm) {
  for (Index k = 0; k < m.cols(); ++k)
    if (!std::isfinite(m(i, k))) fail_bad_row<T>(name, i, k, static_cast<double>(m(i, k)), norm);
  fail_bad_row<T>(name, i, -1, 0.0, norm);
}

// Writes inv_norm[i] = 1/||m_i|| and norm[i] = ||m_i||, each where not null (sized by the caller),
// and throws on the first bad row.
template <typename T>
inline void compute_row_norms(const char* name, const Eigen::Ref<const RowMatrix<T>>& m, T* norm, T* inv_norm) {
  const Index rows = m.rows();
  bool bad = false;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) reduction(|| : bad)
#endif
  for (Index i = 0; i < rows; ++i) {
    const double n = stable_row_norm(m.row(i).data(), m.cols());
    if (!norm_accepted<T>(n)) {
      bad = true;
      continue;
    }
    if (inv_norm) inv_norm[i] = static_cast<T>(1.0 / n);
    if (norm) norm[i] = static_cast<T>(n);
  }
  if (!bad) return;
  for (Index i = 0; i < rows; ++i) {
    const double n = stable_row_norm(m.row(i).data(), m.cols());
    if (!norm_accepted<T>(n)) fail_bad_row<T>(name, m, i, n);
  }
}

// The same into vectors sized here.
template <typename T>
inline void compute_row_norms(const char* name, const Eigen::Ref<const RowMatrix<T>>& m, Vector<T>* norm,
                              Vector<T>& inv_norm) {
  inv_norm.resize(m.rows());
  if (norm) norm->resize(m.rows());
  compute_row_norms<T>(name, m, norm ? norm->data() : static_cast<T*>(nullptr), inv_norm.data());
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
