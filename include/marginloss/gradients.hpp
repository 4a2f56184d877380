// marginloss: where a backward writes, and what the allocating form returns.
//
//   ml::backward(fwd, 1.0f, {dX, dW});                 // views of caller-owned memory
//   ml::backward(fwd, 1.0f, {dX, dW, dmargins});       // learnable margins (AdaptiveMargin)
//
// One struct for every entry point and backend: the CPU's Gradients holds Eigen::Ref views
// (nothing is copied; blocks and Maps of foreign buffers work), the CUDA backend's
// cuda::Gradients holds DeviceMatrix views (cuda/types.cuh).
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "detail/validate.hpp"
#include "detail/forward_context.hpp"
#include "policies/common.hpp"
#include "types.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// Where backward() and forward_backward() write: dL/dX (B x D), dL/dW (C x D, or the shard's
/// rows) with respect to the raw inputs and, for policies with learnable margins
/// (AdaptiveMargin), dL/dmargins (C entries; empty for every other policy: a call checks both
/// ways). Views of caller-owned memory, row-major, of the policy's scalar type.
template <typename T>
struct Gradients {
  Eigen::Ref<RowMatrix<T>> dX;      ///< B x D
  Eigen::Ref<RowMatrix<T>> dW;      ///< C x D (the shard's rows when sharded)
  Eigen::Ref<Vector<T>> dmargins;   ///< C entries for learnable margins, else empty

  /// dX and dW: any writable row-major Eigen object of scalar T (RowMatrix, Map, Ref, block).
  template <typename DXo, typename DWo>
  Gradients(DXo&& dX_, DWo&& dW_)
      : dX((detail::check_output_matrix<DXo, T>(), dX_)),
        dW((detail::check_output_matrix<DWo, T>(), dW_)),
        dmargins(no_margins()) {}

  /// With dL/dmargins (learnable margins).
  template <typename DXo, typename DWo, typename DMo>
  Gradients(DXo&& dX_, DWo&& dW_, DMo&& dmargins_)
      : dX((detail::check_output_matrix<DXo, T>(), dX_)),
        dW((detail::check_output_matrix<DWo, T>(), dW_)),
        dmargins((detail::check_output_matrix<DMo, T>(), dmargins_)) {}

  /// True when dmargins is given (non-empty).
  bool has_dmargins() const { return dmargins.size() > 0; }

 private:
  static Eigen::Map<Vector<T>> no_margins() { return Eigen::Map<Vector<T>>(nullptr, 0); }
};

/// Deduction guide: `ml::Gradients g{dX, dW};` takes T from dX's scalar type.
template <typename DXo, typename DWo>
Gradients(DXo&&, DWo&&) -> Gradients<typename std::decay_t<DXo>::Scalar>;
/// Deduction guide: `ml::Gradients g{dX, dW, dmargins};` takes T from dX's scalar type.
template <typename DXo, typename DWo, typename DMo>
Gradients(DXo&&, DWo&&, DMo&&) -> Gradients<typename std::decay_t<DXo>::Scalar>;

/// What the allocating forward_backward(policy, X, W, labels) returns.
template <typename T>
struct Result {
  /// Mean over the batch of the cross-entropy of the margined logits, plus `regulariser` for
  /// policies with learnable margins (the loss minimised).
  T loss;
  T regulariser = T(0);  ///< the margins' regulariser R included in `loss` (AdaptiveMargin), else 0
  RowMatrix<T> dX;       ///< dL/dX, B x D, with respect to the raw features
  RowMatrix<T> dW;       ///< dL/dW, C x D, with respect to the raw class weights
  Vector<T> dmargins;    ///< dL/dmargins, C, for policies with learnable margins (else empty)
};

namespace detail {

template <typename P, typename T>
void check_dmargins_given(const Gradients<T>& out) {
  check_dmargins_given<P>(out.has_dmargins(), "");
}

}  // namespace detail

MARGINLOSS_NAMESPACE_END
