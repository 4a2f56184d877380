// marginloss: which library computes the CPU engine's matrix products.
#pragma once

/// \file
/// The product backend of the CPU engine, chosen by the CMake target a program links
/// (README, "Product backends"): products_backend() names it.

#include "detail/products.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// The library that computes the CPU engine's matrix products for scalar T in the calling
/// translation unit: "oneDNN" (linked marginloss::onednn, which defines
/// MARGINLOSS_PRODUCTS_ONEDNN; float only), "BLAS" (linked marginloss::blas: Eigen's products
/// through BLAS, EIGEN_USE_BLAS) or "Eigen" (the header-only default). Under marginloss::onednn,
/// double products are Eigen's (or BLAS's), since oneDNN has no double GEMM.
template <typename T>
constexpr const char* products_backend() {
#if defined(MARGINLOSS_PRODUCTS_ONEDNN)
  if constexpr (detail::onednn::has_gemm<T>) return "oneDNN";
#endif
#if defined(EIGEN_USE_BLAS)
  return "BLAS";
#else
  return "Eigen";
#endif
}

MARGINLOSS_NAMESPACE_END
