// marginloss: helpers for vectors of per-class margins (the memory AdaptiveMargin and
// ClassMargins view): the LDAM margins from class counts and the projection after an optimiser
// step.
#pragma once

#include <algorithm>
#include <cmath>

#include "errors.hpp"
#include "types.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// LDAM margins (Cao et al., NeurIPS 2019): m_j = max_margin (n_min / n_j)^(1/4), the largest
/// for the rarest class. Every count must be >= 1.
template <typename T, typename Derived>
Vector<T> margins_from_class_counts(const Eigen::MatrixBase<Derived>& counts, T max_margin) {
  detail::require_non_negative("margins_from_class_counts", "max_margin", max_margin);
  if (counts.size() == 0) detail::fail("margins_from_class_counts: counts is empty");
  double n_min = 0;
  for (Index k = 0; k < counts.size(); ++k) {
    const double n = static_cast<double>(counts.derived().coeff(k));
    if (!(n >= 1)) detail::fail("margins_from_class_counts: counts(", k, ") = ", n, " must be >= 1");
    n_min = k == 0 ? n : std::min(n_min, n);
  }
  Vector<T> m(counts.size());
  for (Index k = 0; k < counts.size(); ++k)
    m(k) = static_cast<T>(static_cast<double>(max_margin) * std::pow(n_min / static_cast<double>(counts.derived().coeff(k)), 0.25));
  return m;
}

/// The projection after an optimiser step, in place: margins clamped to [lo, hi] (AdaptiveFace:
/// [0, 1]). Any writable Eigen vector of the margins (a Vector, a Map of a foreign buffer).
template <typename Derived>
void project_margins(const Eigen::MatrixBase<Derived>& margins, typename Derived::Scalar lo = 0,
                     typename Derived::Scalar hi = 1) {
  if (!(lo <= hi)) detail::fail("project_margins: lo = ", lo, " must be <= hi = ", hi);
  // Eigen's idiom for writing through a const MatrixBase& (accepts temporaries such as a Map).
  auto& m = const_cast<Eigen::MatrixBase<Derived>&>(margins);
  m = m.cwiseMax(lo).cwiseMin(hi);
}

MARGINLOSS_NAMESPACE_END
