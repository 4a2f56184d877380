// marginloss: shape and label checks of the entry points.
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "../errors.hpp"
#include "../types.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// Compile-time guard for matrix arguments: row-major views of the policy's scalar with direct
// access. A column-major matrix would otherwise be copied silently into an Eigen::Ref.
template <typename Derived, typename T>
constexpr void check_row_major_matrix() {
  static_assert(std::is_same_v<typename Derived::Scalar, T>,
                "marginloss: matrix scalar type must be the policy's value_type (float or double)");
  static_assert(Derived::IsRowMajor || Derived::ColsAtCompileTime == 1,
                "marginloss: matrices must be row-major (ml::RowMatrix<T> or Eigen::Map<ml::RowMatrix<T>>); "
                "a column-major matrix would be copied");
  static_assert((Derived::Flags & Eigen::DirectAccessBit) != 0,
                "marginloss: pass a matrix, Map or Ref, not an unevaluated expression");
}

template <typename Derived>
constexpr void check_label_vector() {
  static_assert(std::is_integral_v<typename Derived::Scalar>,
                "marginloss: labels must be an integer vector (Eigen::VectorXi or a 64-bit integer vector)");
  static_assert(Derived::ColsAtCompileTime == 1 || Derived::RowsAtCompileTime == 1,
                "marginloss: labels must be a vector");
}

inline void check_batch(Index batch, Index dim, Index classes, Index w_dim, Index n_labels) {
  if (batch == 0) fail("X has 0 rows: the batch is empty");
  if (dim == 0) fail("X has 0 columns: the feature dimension D must be >= 1");
  if (classes == 0) fail("W has 0 rows: there must be at least one class");
  if (w_dim != dim) fail("W has ", w_dim, " columns but X has ", dim, ": both must have D columns");
  if (n_labels != batch) fail("labels has ", n_labels, " entries but X has ", batch, " rows");
}

// y in [0, classes), compared in the label's own signedness: a 64-bit unsigned label >= 2^63
// must not wrap to a negative index.
template <typename L>
constexpr bool label_in_range(L y, Index classes) {
  if constexpr (std::is_unsigned_v<L>)
    return static_cast<unsigned long long>(y) < static_cast<unsigned long long>(classes);
  else
    return y >= 0 && static_cast<long long>(y) < static_cast<long long>(classes);
}

template <typename L>
[[noreturn]] inline void fail_label(Index i, L y, Index classes) {
  if constexpr (std::is_unsigned_v<L>)
    fail("labels[", i, "] = ", static_cast<unsigned long long>(y), " is out of range [0, ", classes, ")");
  else
    fail("labels[", i, "] = ", static_cast<long long>(y), " is out of range [0, ", classes, ")");
}

// Copies labels into `out` after checking each is in [0, classes).
template <typename Derived>
inline void copy_labels(const Eigen::MatrixBase<Derived>& labels, Index classes, Eigen::Matrix<Index, Eigen::Dynamic, 1>& out) {
  out.resize(labels.size());
  for (Index i = 0; i < labels.size(); ++i) {
    const auto y = labels.derived().coeff(i);
    if (!label_in_range(y, classes)) fail_label(i, y, classes);
    out(i) = static_cast<Index>(y);
  }
}

// For inputs inside every accepted range whose exact result still does not fit in T (a scale
// or margin near the type's maximum, an extreme upstream gradient, a feature norm of 1e20 with
// a class-weight norm of 1e-20, ...): an error, never a silent inf or NaN.
[[noreturn]] inline void fail_not_representable(const char* what) {
  fail(what, " is not representable in the scalar type for these inputs: the scale, margins, upstream "
             "gradient or row norms are too extreme (use double, or normalise the inputs)");
}

inline void check_output(const char* name, Index rows, Index cols, Index want_rows, Index want_cols) {
  if (rows != want_rows || cols != want_cols)
    fail(name, " is ", rows, "x", cols, " but must be ", want_rows, "x", want_cols);
}

// True when every coefficient of `v` is finite: x * 0 is 0 for finite x and NaN for an inf or
// NaN, so the sum is 0 exactly when all are finite. One vectorised reduction, where Eigen's
// allFinite() tests the coefficients one by one (measured: 3% of a forward + backward when it
// checked every row of dW). Not valid under -ffast-math (nor is any finiteness test).
template <typename Derived>
inline bool all_finite(const Derived& v) {
  using Scalar = typename Derived::Scalar;
  return (v.array() * Scalar(0)).sum() == Scalar(0);
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
