// marginloss::cuda: the device views and options of the CUDA entry points.
#pragma once

#include <cstddef>
#include <type_traits>

#include "../config.hpp"
#include "../options.hpp"
#include "../value_slope.hpp"

/// \namespace marginloss::v0::cuda
/// The CUDA backend (compile with nvcc, link marginloss::cuda): the CPU API's entry points on
/// device pointers, with caller-owned device workspaces; umbrella header cuda/cuda.cuh.

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {

/// A row-major matrix in device memory: element (i, k) at data[i * ld + k], ld >= cols
/// (elements, not bytes). T may be const. Nothing is owned or copied. A `DeviceMatrix<float>`
/// converts to a `DeviceMatrix<const float>`.
template <typename T>
struct DeviceMatrix {
  T* data = nullptr;  ///< device pointer to element (0, 0)
  Index rows = 0;     ///< number of rows (samples or classes)
  Index cols = 0;     ///< number of columns (the feature dimension D)
  Index ld = 0;       ///< leading dimension: elements between the starts of two rows, >= cols

  DeviceMatrix() = default;
  /// A view of `rows_` x `cols_` at `data_`; ld < 0: contiguous rows (ld = cols).
  DeviceMatrix(T* data_, Index rows_, Index cols_, Index ld_ = -1)
      : data(data_), rows(rows_), cols(cols_), ld(ld_ < 0 ? cols_ : ld_) {}
  /// The const view of a mutable one (`DeviceMatrix<float>` to `DeviceMatrix<const float>`).
  template <typename U, typename = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  DeviceMatrix(const DeviceMatrix<U>& other) : data(other.data), rows(other.rows), cols(other.cols), ld(other.ld) {}
};

/// How the classes are processed: marginloss::Options, the CPU's type (options.hpp).
using Options = marginloss::Options;

}  // namespace cuda
MARGINLOSS_NAMESPACE_END
