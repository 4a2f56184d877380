// marginloss: ClassValues<T>, a view of one value per class (per-class margins).
//
// Policies with per-class data (AdaptiveMargin, ClassMargins) hold this view, not the values:
// the caller owns the memory (an Eigen vector, a std::vector, a PyTorch tensor, a device
// buffer for the CUDA backend), updates it in place after each optimiser step, and the policy
// stays a plain, trivially copyable struct that the CUDA kernels receive by value. A policy
// therefore never copies C values per step, and a device pointer works exactly like a host one.
//
// The view does not extend the life of what it points to. Building one from a temporary
// container is a compile-time error (it would dangle after the full expression); resizing the
// owner (which may reallocate) invalidates the view: build the policy again after a resize.
#pragma once

#include <type_traits>
#include <utility>

#include "config.hpp"
#include "value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN

namespace detail {
// Eigen objects state their inner stride at compile time: a view needs consecutive values (a
// Map with an InnerStride, or a column of a row-major matrix, has data() and size() too, but
// data()[k] is not its k-th value). Other containers (std::vector, std::array) are contiguous.
template <typename V, typename = void>
struct unit_inner_stride : std::true_type {};
template <typename V>
struct unit_inner_stride<V, std::void_t<decltype(V::InnerStrideAtCompileTime)>>
    : std::bool_constant<static_cast<int>(V::InnerStrideAtCompileTime) == 1> {};
template <typename V, typename T, typename = void>
struct is_contiguous_of : std::false_type {};
template <typename V, typename T>
struct is_contiguous_of<V, T, std::void_t<decltype(std::declval<const V&>().data()), decltype(std::declval<const V&>().size())>>
    : std::bool_constant<std::is_convertible_v<decltype(std::declval<const V&>().data()), const T*> &&
                         unit_inner_stride<V>::value> {};
template <typename V, typename = void>
struct has_size : std::false_type {};
template <typename V>
struct has_size<V, std::void_t<decltype(std::declval<const V&>().size())>> : std::true_type {};
template <typename V>
inline constexpr bool always_false_v = false;
}  // namespace detail

/// A read-only view of `size` values, one per class, at `data` (host or device memory). The
/// caller owns the values and keeps them alive and unmoved while a policy holds the view.
template <typename T>
struct ClassValues {
  const T* data = nullptr;  ///< the first value; the policy reads data[k] for class k
  Index size = 0;           ///< the number of values (classes)

  /// An empty view (a policy holding it fails validation: it needs one value per class).
  constexpr ClassValues() = default;
  /// `size` values at `data` (host memory for the CPU engine, device memory for the CUDA one).
  MARGINLOSS_HD constexpr ClassValues(const T* data_, Index size_) : data(data_), size(size_) {}
  /// A view of a contiguous container that outlives the policy: Eigen vector or Map,
  /// std::vector, std::array, std::span.
  template <typename V, std::enable_if_t<detail::is_contiguous_of<V, T>::value, int> = 0>
  ClassValues(const V& values)  // NOLINT(google-explicit-constructor): a view, converts implicitly
      : data(values.data()), size(static_cast<Index>(values.size())) {}
  /// A temporary container would be destroyed at the end of the expression that built the
  /// policy, leaving the view dangling: rejected at compile time.
  template <typename V, std::enable_if_t<!std::is_lvalue_reference_v<V> && detail::is_contiguous_of<V, T>::value &&
                                             !std::is_same_v<std::decay_t<V>, ClassValues>,
                                         int> = 0>
  ClassValues(V&&) {  // NOLINT(google-explicit-constructor)
    static_assert(detail::always_false_v<V>,
                  "marginloss: per-class values are a view of memory the caller owns (ClassValues): keep the margins "
                  "in a named vector that outlives the policy, not a temporary");
  }

  /// An expression without storage (Eigen's Constant(), a cast, a product), a strided Eigen
  /// view or a container of another scalar type: rejected at compile time, there is no memory
  /// holding the values consecutively as T to view.
  template <typename V, std::enable_if_t<detail::has_size<std::decay_t<V>>::value &&
                                             !detail::is_contiguous_of<std::decay_t<V>, T>::value,
                                         int> = 0>
  ClassValues(V&&) {  // NOLINT(google-explicit-constructor)
    static_assert(detail::always_false_v<V>,
                  "marginloss: per-class values are a view of memory the caller owns (ClassValues): evaluate the "
                  "expression into a named vector of the policy's scalar type first and pass that vector");
  }

  /// The value of class k (no bounds check: the engines check size == C once per call).
  MARGINLOSS_HD T operator[](Index k) const { return data[k]; }
};

MARGINLOSS_NAMESPACE_END
