// marginloss: configuration shared by every header.
#pragma once

// The library's version, written only here: CMakeLists.txt reads these three lines for
// project(VERSION), the installed package's version file and the API reference.
#define MARGINLOSS_VERSION_MAJOR 0
#define MARGINLOSS_VERSION_MINOR 1
#define MARGINLOSS_VERSION_PATCH 0
// One number for #if comparisons: 10000 * major + 100 * minor + patch (0.1.0 -> 100).
#define MARGINLOSS_VERSION \
  (MARGINLOSS_VERSION_MAJOR * 10000 + MARGINLOSS_VERSION_MINOR * 100 + MARGINLOSS_VERSION_PATCH)

// MARGINLOSS_HD marks the policy functions that are shared by host and device code.
// Under nvcc it expands to __host__ __device__; everywhere else to nothing, so the same
// policy struct is the one place each formula is written (like Eigen's EIGEN_DEVICE_FUNC).
#if defined(__CUDACC__)
#define MARGINLOSS_HD __host__ __device__
#else
#define MARGINLOSS_HD
#endif

// The public API lives in an inline versioned namespace so that two binaries built against
// incompatible versions fail to link instead of silently mixing layouts.
#define MARGINLOSS_NAMESPACE_BEGIN \
  namespace marginloss {           \
  inline namespace v0 {
#define MARGINLOSS_NAMESPACE_END \
  }                              \
  }
