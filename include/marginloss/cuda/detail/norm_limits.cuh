// marginloss::cuda: the accepted row norms, [2^-100, 2^100] in float and [2^-1000, 2^1000] in
// double: detail::NormRange (detail/norm_range.hpp, Eigen-free), shared with the CPU engine.
#pragma once

#include "../../config.hpp"
#include "../../detail/norm_range.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// One definition for CPU and GPU: detail/norm_range.hpp.
template <typename T>
using NormLimits = marginloss::detail::NormRange<T>;

template <typename T>
__host__ __device__ inline bool norm_accepted(double norm) {
  return norm >= NormLimits<T>::lo && norm <= NormLimits<T>::hi;
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
