// marginloss: the matrix and vector types of the public API.
#pragma once

#include <Eigen/Core>

#include "config.hpp"

MARGINLOSS_NAMESPACE_BEGIN

using Index = Eigen::Index;

// Row-major storage: one sample (X) or one class (W) per contiguous row, the layout every
// deep-learning framework uses, so buffers from elsewhere map without a copy.
template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// The value of a transformed logit (before the scale) and its derivative in the cosine, as
// used by the backward pass (the "slope": the exact derivative, or 1 in straight-through mode).
template <typename T>
struct ValueSlope {
  T value;
  T slope;
};

MARGINLOSS_NAMESPACE_END
