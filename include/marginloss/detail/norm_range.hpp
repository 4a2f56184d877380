// marginloss: the accepted range of row norms, shared by the CPU engine and the CUDA kernels
// (Eigen-free, so device code can include it).
#pragma once

#include "../config.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// Accepted row norms: [2^-100, 2^100] in float, [2^-1000, 2^1000] in double. Outside, the
// products and reciprocals of the normalisation lose precision or overflow in T, so such rows
// are rejected rather than turned into silently wrong cosines.
template <typename T>
struct NormRange;
template <>
struct NormRange<float> {
  static constexpr double lo = 7.888609052210118e-31;   // 2^-100
  static constexpr double hi = 1.2676506002282294e30;   // 2^100
};
template <>
struct NormRange<double> {
  static constexpr double lo = 9.332636185032189e-302;  // 2^-1000
  static constexpr double hi = 1.0715086071862673e301;  // 2^1000
};

// True when a row of norm `norm` (computed in double) may be normalised in T.
template <typename T>
MARGINLOSS_HD inline bool norm_accepted(double norm) {
  return norm >= NormRange<T>::lo && norm <= NormRange<T>::hi;
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
