// marginloss: the three matrix products of the CPU engine (detail/engine.hpp), written once here
// so that a product backend replaces all of them:
//
//   product_a_bt(A, B, out)    out  = A B^T   forward and recomputed backward: K = X^ W_t^T
//   accumulate_a_b(A, B, out)  out += A B     backward: partial dX += G' W_t
//   product_at_b(A, B, out)    out  = A^T B   backward: dW_t = G'^T X^
//
// Every operand is a row-major view with unit inner stride (RowMatrix, its Map, Ref and
// middleRows blocks): rows may be strided, columns are contiguous.
//
// The backend is chosen per translation unit by the target the consumer links:
//   marginloss::marginloss alone  Eigen's own products (the header-only default);
//   + marginloss::blas            Eigen's products through BLAS (EIGEN_USE_BLAS): the same Eigen
//                                 expressions below, Eigen hands them to ?gemm;
//   + marginloss::onednn          oneDNN's dnnl_sgemm for float (MARGINLOSS_PRODUCTS_ONEDNN,
//                                 backends/onednn.hpp); double stays with Eigen (oneDNN 2.x has
//                                 no double GEMM).
// All translation units of a program should link the same backend: the engine's functions are
// inline, and the linker keeps one definition of each.
//
// The engine calls these once per class tile, each tile on one OpenMP thread, and every call is
// single-threaded there (threads.hpp, serial_nested_regions): the products of a tile do not
// depend on the thread count, which keeps the loss and dW bit-identical for any thread count and
// dX for a fixed one (per-thread partial sums added in thread order).
#pragma once

#include <type_traits>

#include "../types.hpp"

#if defined(MARGINLOSS_PRODUCTS_ONEDNN)
#include "../backends/onednn.hpp"
#endif

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

template <typename V>
constexpr void check_product_operand() {
  static_assert(std::decay_t<V>::IsRowMajor, "marginloss: the engine's products take row-major views");
}

// out = A B^T: A is m x k, B is n x k, out is m x n.
template <typename A, typename B, typename Out>
inline void product_a_bt(const A& a, const B& b, Out&& out) {
  check_product_operand<A>(), check_product_operand<B>(), check_product_operand<Out>();
#if defined(MARGINLOSS_PRODUCTS_ONEDNN)
  using T = typename std::decay_t<Out>::Scalar;
  if constexpr (onednn::has_gemm<T>)
    if (onednn::gemm('N', 'T', out.rows(), out.cols(), a.cols(), a.data(), a.outerStride(), b.data(),
                     b.outerStride(), T(0), out.data(), out.outerStride()))
      return;
#endif
  out.noalias() = a * b.transpose();
}

// out += A B: A is m x k, B is k x n, out is m x n.
template <typename A, typename B, typename Out>
inline void accumulate_a_b(const A& a, const B& b, Out&& out) {
  check_product_operand<A>(), check_product_operand<B>(), check_product_operand<Out>();
#if defined(MARGINLOSS_PRODUCTS_ONEDNN)
  using T = typename std::decay_t<Out>::Scalar;
  if constexpr (onednn::has_gemm<T>)
    if (onednn::gemm('N', 'N', out.rows(), out.cols(), a.cols(), a.data(), a.outerStride(), b.data(),
                     b.outerStride(), T(1), out.data(), out.outerStride()))
      return;
#endif
  out.noalias() += a * b;
}

// out = A^T B: A is k x m, B is k x n, out is m x n.
template <typename A, typename B, typename Out>
inline void product_at_b(const A& a, const B& b, Out&& out) {
  check_product_operand<A>(), check_product_operand<B>(), check_product_operand<Out>();
#if defined(MARGINLOSS_PRODUCTS_ONEDNN)
  using T = typename std::decay_t<Out>::Scalar;
  if constexpr (onednn::has_gemm<T>)
    if (onednn::gemm('T', 'N', out.rows(), out.cols(), a.rows(), a.data(), a.outerStride(), b.data(),
                     b.outerStride(), T(0), out.data(), out.outerStride()))
      return;
#endif
  out.noalias() = a.transpose() * b;
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
