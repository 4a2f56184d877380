// marginloss: the matrix and vector types of the public API.
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "config.hpp"
#include "value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN

static_assert(std::is_same_v<Index, Eigen::Index>, "marginloss::Index must be Eigen's index type");

/// Row-major storage: one sample (X) or one class (W) per contiguous row, the layout every
/// deep-learning framework uses, so buffers from elsewhere map without a copy.
template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Column vector: per-row (B) or per-class (C) values such as margins and their gradient.
template <typename T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

MARGINLOSS_NAMESPACE_END
