// marginloss::cuda: the device views and options of the CUDA entry points.
#pragma once

#include <cstddef>
#include <type_traits>

#include "../config.hpp"
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

/// How the classes are processed; the same meaning as marginloss::Options on the CPU.
struct Options {
  /// Classes per block. 0 (default): automatic -- the dense path (one B x C cosine buffer in
  /// the workspace) while that buffer fits in `memory_budget` bytes, otherwise the largest
  /// blocks whose B x block buffer fits it (large products keep the GPU busy; at least 256
  /// classes). A value >= C is the dense path; smaller values force blocks: an online
  /// logsumexp over the blocks in the forward and a second product per block in the backward,
  /// with a workspace of O(B x block + B x D + C) instead of O(B x C).
  Index class_block = 0;
  /// Bytes the cosine buffer may take with class_block = 0 (default 512 MiB): B x C while it
  /// fits, else the largest B x block that does.
  std::size_t memory_budget = std::size_t(512) << 20;
};

}  // namespace cuda
MARGINLOSS_NAMESPACE_END
