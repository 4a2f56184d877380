// marginloss::cuda: the accepted row norms, [2^-100, 2^100] in float and [2^-1000, 2^1000] in
// double -- the values of detail::NormRange in detail/row_norms.hpp (which includes Eigen and so
// stays out of device code); the CUDA tests check that the two agree.
#pragma once

#include "../../config.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

template <typename T>
struct NormLimits;
template <>
struct NormLimits<float> {
  static constexpr double lo = 7.888609052210118e-31;  // 2^-100
  static constexpr double hi = 1.2676506002282294e30;  // 2^100
};
template <>
struct NormLimits<double> {
  static constexpr double lo = 9.332636185032189e-302;  // 2^-1000
  static constexpr double hi = 1.0715086071862673e301;  // 2^1000
};

template <typename T>
__host__ __device__ inline bool norm_accepted(double norm) {
  return norm >= NormLimits<T>::lo && norm <= NormLimits<T>::hi;
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
