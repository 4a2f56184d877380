// marginloss: the two scalar types the policies use, free of Eigen so that policy headers
// compile as device code (CUDA) as well as host code.
#pragma once

#include <cstddef>

#include "config.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// Sizes and indices: Eigen's default index type (checked in types.hpp).
using Index = std::ptrdiff_t;

/// The value of a transformed logit (before the scale) and its derivative in the cosine, as
/// used by the backward pass (the "slope": the exact derivative, or 1 in straight-through mode).
template <typename T>
struct ValueSlope {
  T value;  ///< f(c) or h(c): the logit divided by the scale S_i
  T slope;  ///< the df/dc or dh/dc the backward pass multiplies by
};

MARGINLOSS_NAMESPACE_END
