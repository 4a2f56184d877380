// marginloss: how the CPU engine processes the classes (Options), and the automatic block rule
// shared by the entry points and Workspace's size query.
#pragma once

#include <algorithm>
#include <cstddef>

#include "errors.hpp"
#include "types.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// How the CPU engine processes the classes: densely or in blocks, within a memory budget.
struct Options {
  /// Classes per block. 0 (default): automatic -- the dense path (one B x C cosine buffer)
  /// while that buffer fits in `memory_budget` bytes, otherwise blocks whose B x block buffer
  /// takes about 8 MiB (at most memory_budget; at least 256 classes); the engine's class tiles
  /// keep the work in cache whatever the block (8192 and 16384 classes measured equal, 1.28x
  /// dense at 256 x 512 x 100k), so the block only bounds memory. A value >= C is the dense
  /// path; smaller values force blocks: an online logsumexp over the blocks in the forward, and
  /// a second pass that recomputes each block's cosines in the backward (one more B x D x C
  /// product), with peak extra memory O(B x block + B x D) instead of O(B x C).
  Index class_block = 0;
  /// Bytes the B x C cosine buffer of the dense path may take before the automatic choice
  /// (class_block = 0) switches to blocks (default 512 MiB); also caps a block's buffer.
  std::size_t memory_budget = std::size_t(512) << 20;
};

namespace detail {
template <typename T>
inline Index resolve_class_block(const Options& o, Index batch, Index classes) {
  if (o.class_block < 0) fail("Options::class_block = ", o.class_block, " must be >= 0");
  if (o.class_block > 0) return o.class_block;
  const auto row_bytes = static_cast<std::size_t>(batch > 0 ? batch : 1) * sizeof(T);
  if (static_cast<std::size_t>(classes) * row_bytes <= o.memory_budget) return classes;
  constexpr std::size_t block_bytes = std::size_t(8) << 20;
  const auto block = static_cast<Index>(std::min(block_bytes, o.memory_budget) / row_bytes);
  return block < 256 ? 256 : block;
}
}  // namespace detail

MARGINLOSS_NAMESPACE_END
