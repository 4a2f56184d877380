// marginloss: configuration shared by every header.
#pragma once

/// \file
/// The version, the host/device marker and the versioned namespace, shared by every header.

// The library's version, written only here: CMakeLists.txt reads these three lines for
// project(VERSION), the installed package's version file and the API reference, and
// python/setup.py for the PyTorch package's version.
/// Major version: changes that break the API or the ABI (the inline namespace v0 follows it).
#define MARGINLOSS_VERSION_MAJOR 0
/// Minor version.
#define MARGINLOSS_VERSION_MINOR 1
/// Patch version.
#define MARGINLOSS_VERSION_PATCH 0
/// One number for \#if comparisons: 10000 * major + 100 * minor + patch (0.1.0 -> 100).
#define MARGINLOSS_VERSION \
  (MARGINLOSS_VERSION_MAJOR * 10000 + MARGINLOSS_VERSION_MINOR * 100 + MARGINLOSS_VERSION_PATCH)

// MARGINLOSS_HD marks the policy functions that are shared by host and device code.
// Under nvcc it expands to __host__ __device__; everywhere else to nothing, so the same
// policy struct is the one place each formula is written (like Eigen's EIGEN_DEVICE_FUNC).
/// Marks the policy functions shared by host and device code: `__host__ __device__` under
/// nvcc, nothing elsewhere, so each formula is written once (like Eigen's EIGEN_DEVICE_FUNC).
#if defined(__CUDACC__)
#define MARGINLOSS_HD __host__ __device__
#else
#define MARGINLOSS_HD
#endif

// The public API lives in an inline versioned namespace so that two binaries built against
// incompatible versions fail to link instead of silently mixing layouts.
/// Opens `namespace marginloss { inline namespace v0 {`, the namespace of the public API.
#define MARGINLOSS_NAMESPACE_BEGIN \
  namespace marginloss {           \
  inline namespace v0 {
/// Closes what MARGINLOSS_NAMESPACE_BEGIN opened.
#define MARGINLOSS_NAMESPACE_END \
  }                              \
  }

/// \namespace marginloss
/// Margin-based normalised-softmax losses with exact analytic gradients (examples write
/// `namespace ml = marginloss;`). Everything outside `detail` is public.

/// \namespace marginloss::v0
/// The inline versioned namespace: binaries built against incompatible versions fail to link
/// instead of mixing layouts. Users name the entities through `marginloss::` alone.
