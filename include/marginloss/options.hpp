// marginloss: how a call processes the classes (Options), one definition for the CPU engine and
// the CUDA backend (cuda::Options is this type). Eigen-free. The rule that resolves it is
// detail/plan.hpp's resolve_class_block.
#pragma once

#include <cstddef>

#include "config.hpp"
#include "value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// How the classes are processed: densely or in blocks, within a memory budget (CPU and CUDA).
struct Options {
  /// Classes per block. 0 (default): automatic -- the dense path (one B x C cosine buffer)
  /// while that buffer fits in `memory_budget` bytes, otherwise blocks of at least 256 classes
  /// whose B x block buffer fits the budget and the backend's preference: about 8 MiB on the
  /// CPU, whose class tiles keep the work in cache whatever the block (8192 and 16384 classes
  /// measured equal, 1.28x dense at 256 x 512 x 100k), so the block only bounds memory; the
  /// whole budget on CUDA, where large products keep the GPU busy. A value >= C is the dense
  /// path; smaller values force blocks: an online logsumexp over the blocks in the forward, and
  /// a second pass that recomputes each block's cosines in the backward (one more B x D x C
  /// product), with peak extra memory O(B x block + B x D) instead of O(B x C).
  Index class_block = 0;
  /// Bytes the B x C cosine buffer of the dense path may take before the automatic choice
  /// (class_block = 0) switches to blocks (default 512 MiB); also caps a block's buffer.
  std::size_t memory_budget = std::size_t(512) << 20;
};

MARGINLOSS_NAMESPACE_END
