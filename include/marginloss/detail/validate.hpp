// marginloss: the Eigen-side argument checks of the CPU entry points (compile-time guards,
// label copies); the messages and range rules themselves are in checks.hpp, shared with CUDA.
#pragma once

#include <Eigen/Core>
#include <type_traits>
#include <vector>

#include "../errors.hpp"
#include "../types.hpp"
#include "checks.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// Compile-time guards of the entry points' arguments. They are class templates, used as
// `check_row_major_matrix<DX, T>();` at the top of an entry point's body: a class is
// instantiated on the spot (a function template's body would be instantiated later), so a misuse
// reports the library's message before any error from inside Eigen.

// True for Eigen objects, whatever their CRTP base (VectorBlock derives from Block's bases).
template <typename D>
std::true_type is_eigen_object_impl(const Eigen::EigenBase<D>*);
std::false_type is_eigen_object_impl(...);
template <typename T>
inline constexpr bool is_eigen_object_v = decltype(is_eigen_object_impl(std::declval<const T*>()))::value;

// Matrix arguments: Eigen objects with the policy's scalar, row-major, direct access, and
// contiguous rows. A column-major matrix would otherwise be copied silently into an Eigen::Ref.
template <typename M, typename T>
struct check_row_major_matrix {
  using Derived = std::decay_t<M>;
  static_assert(is_eigen_object_v<Derived>,
                "marginloss: matrix arguments must be Eigen objects (ml::RowMatrix<T>, Eigen::Map, Eigen::Ref, a block)");
  static_assert(std::is_same_v<typename Derived::Scalar, T>,
                "marginloss: matrix scalar type must be the policy's value_type (float or double)");
  static_assert(Derived::IsRowMajor || Derived::ColsAtCompileTime == 1,
                "marginloss: matrices must be row-major (ml::RowMatrix<T> or Eigen::Map<ml::RowMatrix<T>>); "
                "a column-major matrix would be copied");
  static_assert((Derived::Flags & Eigen::DirectAccessBit) != 0,
                "marginloss: pass a matrix, Map or Ref, not an unevaluated expression");
  // Rows are read as contiguous arrays: an inner stride would be read wrongly or, through an
  // Eigen::Ref, copied on every call.
  static_assert(Eigen::internal::inner_stride_at_compile_time<Derived>::ret == 1,
                "marginloss: matrix rows must be contiguous (inner stride 1): use a Map with "
                "Eigen::OuterStride<> only, or copy the strided view into an ml::RowMatrix once");
};

// Output matrices (dX, dW): as above, and writable.
template <typename M, typename T>
struct check_output_matrix : check_row_major_matrix<M, T> {
  static_assert(!std::is_const_v<std::remove_reference_t<M>> &&
                    (std::decay_t<M>::Flags & Eigen::LvalueBit) != 0,
                "marginloss: output matrices (dX, dW, dcos) must be writable: not const, not a const view");
};

// The workspace's scalar is the policy's.
template <typename U, typename T>
struct check_workspace_scalar {
  static_assert(std::is_same_v<U, T>,
                "marginloss: the Workspace's scalar type must be the policy's value_type (ml::Workspace<float> "
                "for ml::ArcFace<float>)");
};

template <typename Derived>
struct check_label_vector {
  static_assert(std::is_integral_v<typename Derived::Scalar>,
                "marginloss: labels and other index vectors (active class ids, sample indices) must be integer "
                "vectors (Eigen::VectorXi or a 64-bit integer vector)");
  static_assert(Derived::ColsAtCompileTime == 1 || Derived::RowsAtCompileTime == 1,
                "marginloss: labels must be a vector");
};

// Labels as the entry points accept them: an integer Eigen vector, or a std::vector of an
// integer type (viewed without a copy).
template <typename L, typename = void>
struct label_argument {
  static_assert(sizeof(L) == 0,
                "marginloss: labels must be an integer vector: Eigen::VectorXi, a 64-bit Eigen vector, an "
                "Eigen::Map of a foreign buffer, or a std::vector of an integer type");
};
template <typename L>
struct label_argument<L, std::enable_if_t<is_eigen_object_v<L>>> : check_label_vector<L> {
  static const L& view(const L& labels) { return labels; }
};
template <typename I, typename A>
struct label_argument<std::vector<I, A>> {
  static_assert(std::is_integral_v<I>, "marginloss: labels must be integers (std::vector<int>, std::vector<int64_t>, ...)");
  static Eigen::Map<const Eigen::Matrix<I, Eigen::Dynamic, 1>> view(const std::vector<I, A>& labels) {
    return {labels.data(), static_cast<Index>(labels.size())};
  }
};

// The shapes of a call with a label vector (checks.hpp holds the messages).
inline void check_batch(Index batch, Index dim, Index classes, Index w_dim, Index n_labels) {
  check_shapes(batch, dim, classes, w_dim);
  check_label_count(n_labels, batch);
}

// Copies the index vector `v` (`name` in messages) into `out` after checking each entry is in
// [0, n).
template <typename Derived>
inline void copy_indices(const char* name, const Eigen::MatrixBase<Derived>& v, Index n,
                         Eigen::Matrix<Index, Eigen::Dynamic, 1>& out) {
  out.resize(v.size());
  for (Index i = 0; i < v.size(); ++i) {
    const auto k = v.derived().coeff(i);
    if (!index_in_range(k, n)) fail_index(name, i, k, n);
    out(i) = static_cast<Index>(k);
  }
}

// Copies labels into `out` after checking each is in [0, classes).
template <typename Derived>
inline void copy_labels(const Eigen::MatrixBase<Derived>& labels, Index classes, Eigen::Matrix<Index, Eigen::Dynamic, 1>& out) {
  copy_indices("labels", labels, classes, out);
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
