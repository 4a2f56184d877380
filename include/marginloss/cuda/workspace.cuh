// marginloss::cuda: the caller-owned device workspace, CUB-style: ask for the size, allocate
// once, pass it to every call. Nothing is allocated by the entry points.
//
//   const std::size_t bytes = ml::cuda::workspace_bytes<float>(B, D, C, options);
//   void* memory;  cudaMalloc(&memory, bytes);                 // once, outside the training loop
//   ml::cuda::Workspace<float> ws(memory, bytes);               // a host-side view; owns nothing
//
// Layout (each buffer aligned to 256 bytes): the status the kernels report (first), X^ (B x D), the cosine buffer (B x block: B x C on
// the dense path, which the backward overwrites with dL/dcos / |w_j|), per-row vectors (|x_i|,
// 1/|x_i|, t_i, running max, lse, dL/dS_i in T; the running sum of exp in double; the
// validated labels), 1/|w_j| for the C classes, per-(row, segment) partials of the row pass,
// and the partial dX of a sharded call (B x D).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../detail/plan.hpp"
#include "../errors.hpp"
#include "detail/reduce.cuh"
#include "detail/state.cuh"
#include "types.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {

template <typename T>
class Workspace;

namespace detail {

struct Engine;

inline constexpr std::size_t kAlign = 256;
// Columns of one (row, segment) block of the row-pass kernels: 8 per thread and pass.
inline constexpr Index kSegment = 2048;
// The segments of a block are the y dimension of the row-pass grid (at most 65535).
inline constexpr Index kMaxSegments = 65535;

inline std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Classes per block, from the options: detail/plan.hpp's rule, with the whole budget as the
// GPU's block preference.
template <typename T>
inline Index resolve_class_block(const Options& o, Index batch, Index classes) {
  return marginloss::detail::resolve_class_block<T>(o, batch, classes, marginloss::detail::kCudaBlockBytes);
}

// Columns per segment of the row pass for blocks of `block` classes: kSegment, or more when a
// block would otherwise need more than kMaxSegments segments; a multiple of kThreads.
inline Index segment_length(Index block) {
  Index seg = kSegment;
  const Index needed = (block + kMaxSegments - 1) / kMaxSegments;
  if (needed > seg) seg = (needed + kThreads - 1) / kThreads * kThreads;
  return seg;
}

inline Index segments_of(Index columns, Index segment) { return columns > 0 ? (columns + segment - 1) / segment : 0; }

// Byte offsets of the buffers from the aligned start of the workspace.
struct Layout {
  std::size_t xhat = 0, cos = 0, x_norm = 0, x_inv = 0, target = 0, row_max = 0, lse = 0, dscale = 0, row_sum = 0,
              w_inv = 0, labels = 0, part_max = 0, part_sum = 0, dx_partial = 0, state = 0, total = 0;
  Index block = 0, segment = 0, segments = 0;
  bool sharded = false;
};

template <typename T>
inline Layout make_layout(Index batch, Index dim, Index classes, Index block, bool sharded) {
  const auto b = static_cast<std::size_t>(batch), d = static_cast<std::size_t>(dim),
             c = static_cast<std::size_t>(classes);
  Layout l;
  l.block = block;
  l.segment = segment_length(block);
  l.segments = segments_of(block, l.segment);
  l.sharded = sharded;
  std::size_t at = 0;
  auto take = [&at](std::size_t bytes) {
    const std::size_t here = at;
    at += align_up(bytes);
    return here;
  };
  // First, so that it stays in place when the shapes change between calls.
  l.state = take(sizeof(DeviceState<T>));
  l.xhat = take(sizeof(T) * b * d);
  l.cos = take(sizeof(T) * b * static_cast<std::size_t>(block));
  l.x_norm = take(sizeof(T) * b);
  l.x_inv = take(sizeof(T) * b);
  l.target = take(sizeof(T) * b);
  l.row_max = take(sizeof(T) * b);
  l.lse = take(sizeof(T) * b);
  l.dscale = take(sizeof(T) * b);
  l.row_sum = take(sizeof(double) * b);
  l.w_inv = take(sizeof(T) * c);
  l.labels = take(sizeof(long long) * b);
  l.part_max = take(sizeof(T) * b * static_cast<std::size_t>(l.segments));
  l.part_sum = take(sizeof(double) * b * static_cast<std::size_t>(l.segments));
  l.dx_partial = take(sharded ? sizeof(T) * b * d : 0);
  l.total = at;
  return l;
}

// The device pointers of a layout.
template <typename T>
struct Buffers {
  T* xhat;
  T* cos;
  T* x_norm;
  T* x_inv;
  T* target;
  T* row_max;
  T* lse;
  T* dscale;
  double* row_sum;
  T* w_inv;
  long long* labels;
  T* part_max;
  double* part_sum;
  T* dx_partial;
  DeviceState<T>* state;
};

inline void* aligned_start(void* memory) {
  const auto p = reinterpret_cast<std::uintptr_t>(memory);
  return reinterpret_cast<void*>((p + kAlign - 1) / kAlign * kAlign);
}

template <typename T>
inline Buffers<T> carve(void* memory, const Layout& l) {
  char* base = static_cast<char*>(aligned_start(memory));
  return {reinterpret_cast<T*>(base + l.xhat),         reinterpret_cast<T*>(base + l.cos),
          reinterpret_cast<T*>(base + l.x_norm),       reinterpret_cast<T*>(base + l.x_inv),
          reinterpret_cast<T*>(base + l.target),       reinterpret_cast<T*>(base + l.row_max),
          reinterpret_cast<T*>(base + l.lse),          reinterpret_cast<T*>(base + l.dscale),
          reinterpret_cast<double*>(base + l.row_sum), reinterpret_cast<T*>(base + l.w_inv),
          reinterpret_cast<long long*>(base + l.labels), reinterpret_cast<T*>(base + l.part_max),
          reinterpret_cast<double*>(base + l.part_sum), l.sharded ? reinterpret_cast<T*>(base + l.dx_partial) : nullptr,
          reinterpret_cast<DeviceState<T>*>(base + l.state)};
}

// Bytes for a layout, including the slack that aligns an arbitrary start to 256 bytes.
inline std::size_t bytes_with_slack(const Layout& l) { return l.total + kAlign - 1; }

// workspace_bytes / sharded_workspace_bytes: `who` names the caller in the error.
template <typename T>
std::size_t checked_workspace_bytes(const char* who, Index batch, Index dim, Index classes, const Options& options,
                                    bool sharded) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "marginloss::cuda: T is float or double");
  if (batch < 0 || dim < 0 || classes < 0)
    marginloss::detail::fail(who, ": B = ", batch, ", D = ", dim, ", C = ", classes, " must be >= 0");
  const Index block = resolve_class_block<T>(options, batch, classes);
  return bytes_with_slack(make_layout<T>(batch, dim, classes, block, sharded));
}

}  // namespace detail

/// Device bytes the calls need for a batch of B samples of dimension D over C classes, with the
/// classes processed as `options` says. Pass at least this many bytes to Workspace.
template <typename T>
std::size_t workspace_bytes(Index batch, Index dim, Index classes, const Options& options = {}) {
  return detail::checked_workspace_bytes<T>("workspace_bytes", batch, dim, classes, options, false);
}

/// The same for one rank of the class-sharded loss (cuda/sharded.cuh) owning `shard_classes`
/// classes: adds the B x D partial dX that is all-reduced across ranks.
template <typename T>
std::size_t sharded_workspace_bytes(Index batch, Index dim, Index shard_classes, const Options& options = {}) {
  return detail::checked_workspace_bytes<T>("sharded_workspace_bytes", batch, dim, shard_classes, options, true);
}

/// A host-side view of caller-owned device memory, plus what a forward leaves for its backward
/// (shapes, block size, whether a forward is held). It owns nothing: free the memory yourself,
/// after the stream's work is done. One call at a time per workspace; a workspace used on one
/// stream must not be used on another before that stream's work is finished.
template <typename T>
class Workspace {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "marginloss::cuda: T is float or double");

 public:
  /// A workspace without memory: every call rejects it until one with memory is assigned.
  Workspace() = default;
  /// A view of `bytes` bytes of device memory at `device_memory` (any alignment: the buffers
  /// start at the next 256-byte boundary, which workspace_bytes() allows for).
  Workspace(void* device_memory, std::size_t bytes) : memory_(device_memory), bytes_(bytes) {}

  void* data() const { return memory_; }  ///< the device memory given to the constructor
  std::size_t bytes() const { return bytes_; }  ///< its size in bytes

  /// True between a forward and the backward that consumes it.
  bool holds_forward() const { return holds_forward_; }
  /// How many forwards this workspace has run: a Forward context remembers it, so that its
  /// backward can tell that a later forward has reused the buffers.
  std::uint64_t forward_serial() const { return forward_serial_; }
  /// Batch size B of the last forward.
  Index batch() const { return batch_; }
  /// Feature dimension D of the last forward.
  Index dim() const { return dim_; }
  /// All classes of the last forward, of every rank when sharded: C.
  Index num_classes() const { return num_classes_; }
  /// Classes of this rank in the last forward: C, or the shard's rows when sharded.
  Index classes() const { return local_classes_; }
  /// Classes per block of the last forward: Options::class_block resolved, classes() on the
  /// dense path.
  Index class_block() const { return layout_.block; }

 private:
  friend struct detail::Engine;

  void* memory_ = nullptr;
  std::size_t bytes_ = 0;
  detail::Layout layout_{};
  Index batch_ = 0, dim_ = 0, num_classes_ = 0, class_offset_ = 0, local_classes_ = 0;
  // A copy of the last forward's policy and the function that throws its message for a
  // rejected per-class value found on the device (reported by a later check, which does not
  // know the policy's type). Set only for policies with per-class values.
  static constexpr std::size_t kPolicyBytes = 256;
  alignas(16) unsigned char policy_[kPolicyBytes] = {};
  void (*fail_class_value_)(const unsigned char* policy, Index k, double value) = nullptr;
  bool holds_forward_ = false;
  std::uint64_t forward_serial_ = 0;
  bool state_ready_ = false;  // the device status was initialised (by the first forward)
};

}  // namespace cuda
MARGINLOSS_NAMESPACE_END
