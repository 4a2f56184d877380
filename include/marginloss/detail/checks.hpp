// marginloss: the argument checks and their messages, one definition for the CPU engine and the
// CUDA backend. Eigen-free (device code and the CUDA host code include it), so a message can
// never drift between backends: tests/cuda compares them string for string.
#pragma once

#include <type_traits>

#include "../config.hpp"
#include "../errors.hpp"
#include "../value_slope.hpp"
#include "norm_range.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// The one range check of every index input (labels, active class ids, sampler indices):
// v in [0, n), compared in the index's own signedness, so a 64-bit unsigned value >= 2^63
// never wraps to a negative (or, cast back, an in-range) index.
template <typename I>
MARGINLOSS_HD constexpr bool index_in_range(I v, Index n) {
  static_assert(std::is_integral_v<I>, "marginloss: indices must be integers");
  if constexpr (std::is_unsigned_v<I>)
    return static_cast<unsigned long long>(v) < static_cast<unsigned long long>(n);
  else
    return v >= 0 && static_cast<long long>(v) < static_cast<long long>(n);
}

// Labels are indices into the classes.
template <typename L>
MARGINLOSS_HD constexpr bool label_in_range(L y, Index classes) {
  return index_in_range(y, classes);
}

// "name[i] = v is out of range [0, n)", printing v in its own signedness.
template <typename I>
[[noreturn]] inline void fail_index(const char* name, Index i, I v, Index n) {
  if constexpr (std::is_unsigned_v<I>)
    fail(name, "[", i, "] = ", static_cast<unsigned long long>(v), " is out of range [0, ", n, ")");
  else
    fail(name, "[", i, "] = ", static_cast<long long>(v), " is out of range [0, ", n, ")");
}

template <typename L>
[[noreturn]] inline void fail_label(Index i, L y, Index classes) {
  fail_index("labels", i, y, classes);
}

// The shapes every entry point shares: a non-empty batch, D >= 1, at least one class, W with X's
// D columns. `classes` is the total class count (the shard's, or the whole, W's rows).
inline void check_shapes(Index batch, Index dim, Index classes, Index w_dim) {
  if (batch == 0) fail("X has 0 rows: the batch is empty");
  if (dim == 0) fail("X has 0 columns: the feature dimension D must be >= 1");
  if (classes <= 0) fail("W has 0 rows: there must be at least one class");
  if (w_dim != dim) fail("W has ", w_dim, " columns but X has ", dim, ": both must have D columns");
}

inline void check_label_count(Index n_labels, Index batch) {
  if (n_labels != batch) fail("labels has ", n_labels, " entries but X has ", batch, " rows");
}

// A shard of C classes starting at class_offset lies inside [0, num_classes). Written without
// class_offset + C, which overflows for offsets near the index type's maximum.
inline void check_shard_range(Index class_offset, Index C, Index num_classes) {
  if (class_offset < 0 || C < 0 || C > num_classes || class_offset > num_classes - C)
    fail("the shard's ", C, " classes starting at class ", class_offset, " are not inside [0, ", num_classes, ")");
}

inline void check_output_shape(const char* name, Index rows, Index cols, Index want_rows, Index want_cols) {
  if (rows != want_rows || cols != want_cols)
    fail(name, " is ", rows, "x", cols, " but must be ", want_rows, "x", want_cols);
}

// A row that cannot be normalised: its first non-finite entry (col >= 0), a zero norm, or a norm
// outside NormRange<T>.
template <typename T>
[[noreturn]] inline void fail_bad_row(const char* name, Index i, Index col, double value, double norm) {
  if (col >= 0) fail(name, " row ", i, " contains a non-finite value: ", name, "(", i, ", ", col, ") = ", static_cast<T>(value));
  if (norm == 0) fail(name, " row ", i, " has zero norm: it cannot be normalised");
  fail(name, " row ", i, " has norm ", norm, ", outside the supported range [", NormRange<T>::lo, ", ",
       NormRange<T>::hi, "]");
}

// For inputs inside every accepted range whose exact result still does not fit in T (a scale
// or margin near the type's maximum, an extreme upstream gradient, a feature norm of 1e20 with
// a class-weight norm of 1e-20, ...): an error, never a silent inf or NaN.
[[noreturn]] inline void fail_not_representable(const char* what) {
  fail(what, " is not representable in the scalar type for these inputs: the scale, margins, upstream "
             "gradient or row norms are too extreme (use double, or normalise the inputs)");
}

// Sharded calls: every rank throws when any rank rejected its arguments, instead of deadlocking
// in the next collective. `failed` is the number of ranks that failed.
[[noreturn]] inline void fail_other_rank(double failed) {
  fail("another rank rejected its input (", failed, " rank(s) failed); see its message");
}

// A policy's per-class values (policies/common.hpp, has_class_values): one per class. Both
// backends check the count on the host; the values themselves are read where they live.
template <typename P>
inline void check_class_count(const P& policy, Index num_classes, const char* when = "") {
  const Index n = policy.class_values().size;
  if (n != num_classes)
    fail(P::name, ": margins has ", n, " entries", when, " but there are ", num_classes, " classes");
}

// The values, on the host (CPU engines): the first unacceptable one throws the policy's message.
template <typename P>
inline void check_class_values_on_host(const P& policy, Index num_classes) {
  check_class_count(policy, num_classes);
  const auto values = policy.class_values();
  for (Index k = 0; k < num_classes; ++k)
    if (!policy.class_value_ok(values[k])) policy.fail_class_value(k, values[k]);
}

inline void check_grad_loss(double grad_loss) {
  if (!(grad_loss - grad_loss == 0)) fail("grad_loss = ", grad_loss, " must be finite");
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
