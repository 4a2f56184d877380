// TEST EMULATOR, NOT A CUDA IMPLEMENTATION: stands in for the CUDA toolkit's cuda_runtime_api.h
// in the `cuda_emulated` test (see emulator.hpp). The subset of the runtime API that the CUDA
// backend and its tests call, on host memory: "device" allocations are host allocations with
// guard zones (checked when freed) and filled with NaN bytes (a read before a write shows);
// copies check that their device side lies in one allocation; every call is synchronous.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>

#include "emulator.hpp"

typedef int cudaError_t;
enum : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};
typedef struct CUstream_st* cudaStream_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
#define cudaStreamNonBlocking 0x01

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    default: return "cudaErrorUnknown";
  }
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "unknown error";
  }
}

// The last launch error of this OS thread, cleared when read (a bad launch shape).
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = mlcuda_emulator::last_launch_error;
  mlcuda_emulator::last_launch_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return mlcuda_emulator::last_launch_error; }

// One emulated device.
inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }

namespace mlcuda_emulator {

// Live device allocations (start -> bytes), shared by all OS threads.
struct Allocations {
  std::mutex mutex;
  std::map<const unsigned char*, std::size_t> live;
};
inline Allocations& allocations() {
  static Allocations a;
  return a;
}
inline constexpr std::size_t kGuardBytes = 256;
inline constexpr unsigned char kGuardByte = 0xA5;

// [p, p + bytes) lies inside one live device allocation.
inline bool is_device_range(const void* p, std::size_t bytes) {
  const auto* q = static_cast<const unsigned char*>(p);
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mutex);
  auto it = a.live.upper_bound(q);
  if (it == a.live.begin()) return false;
  --it;
  return q >= it->first && q + bytes <= it->first + it->second;
}

inline void check_device_range(const void* p, std::size_t bytes, const char* call) {
  if (!is_device_range(p, bytes)) {
    std::fprintf(stderr, "CUDA test emulator: %s: %zu bytes at %p are not inside one device allocation\n", call, bytes, p);
    fail("a runtime call with a bad device pointer");
  }
}

}  // namespace mlcuda_emulator

inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  using namespace mlcuda_emulator;
  auto* block = static_cast<unsigned char*>(std::malloc(bytes + 2 * kGuardBytes));
  if (!block) return cudaErrorMemoryAllocation;
  std::memset(block, kGuardByte, kGuardBytes);
  std::memset(block + kGuardBytes, 0xFF, bytes);  // NaN in float and double
  std::memset(block + kGuardBytes + bytes, kGuardByte, kGuardBytes);
  *p = block + kGuardBytes;
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mutex);
  a.live[block + kGuardBytes] = bytes;
  return cudaSuccess;
}

inline cudaError_t cudaFree(void* p) {
  using namespace mlcuda_emulator;
  if (!p) return cudaSuccess;
  auto* data = static_cast<unsigned char*>(p);
  std::size_t bytes = 0;
  {
    Allocations& a = allocations();
    std::lock_guard<std::mutex> lock(a.mutex);
    const auto it = a.live.find(data);
    if (it == a.live.end()) return cudaErrorInvalidValue;
    bytes = it->second;
    a.live.erase(it);
  }
  for (std::size_t k = 0; k < kGuardBytes; ++k)
    if ((data - kGuardBytes)[k] != kGuardByte || data[bytes + k] != kGuardByte) {
      std::fprintf(stderr, "CUDA test emulator: a write outside the device allocation of %zu bytes at %p\n", bytes, p);
      fail("device memory corrupted");
    }
  std::free(data - kGuardBytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
  using namespace mlcuda_emulator;
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice) check_device_range(dst, bytes, "cudaMemcpyAsync (destination)");
  if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice) check_device_range(src, bytes, "cudaMemcpyAsync (source)");
  if (kind == cudaMemcpyHostToDevice && is_device_range(src, 1)) fail("cudaMemcpyHostToDevice from device memory");
  if (kind == cudaMemcpyDeviceToHost && is_device_range(dst, 1)) fail("cudaMemcpyDeviceToHost into device memory");
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind);
}

inline cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t = nullptr) {
  if (bytes == 0) return cudaSuccess;
  mlcuda_emulator::check_device_range(dst, bytes, "cudaMemsetAsync");
  std::memset(dst, value, bytes);
  return cudaSuccess;
}

// Streams are tokens: every call has completed when it returns.
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = reinterpret_cast<cudaStream_t>(new char);
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete reinterpret_cast<char*>(stream);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
