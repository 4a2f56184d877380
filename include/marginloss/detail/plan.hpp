// marginloss: the plan of a call, computed once -- the classes per block (Options resolved by one
// rule, the backend's constraint a parameter), the classes per tile, and the CPU workspace's
// buffer sizes, which Workspace::bytes_required, Workspace::reserve and the engine all read.
// Eigen-free: the CUDA backend resolves its block with the same rule.
#pragma once

#include <algorithm>
#include <cstddef>

#include "../config.hpp"
#include "../errors.hpp"
#include "../options.hpp"
#include "../value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// The backend's constraint on an automatic block: the largest B x block cosine buffer it wants.
// CPU: 8 MiB -- its class tiles keep the work in cache whatever the block (8192 and 16384
// classes measured equal, 1.28x dense at 256 x 512 x 100k), so a block only bounds memory.
// CUDA: the whole budget -- large products keep the GPU busy.
inline constexpr std::size_t kCpuBlockBytes = std::size_t(8) << 20;
inline constexpr std::size_t kCudaBlockBytes = ~std::size_t(0);

// Classes per block for a batch of B and C classes (0 when C = 0): the dense path (C) while the
// B x C buffer fits the budget, else the largest block whose B x block buffer fits both the budget
// and the backend's max_block_bytes, at least 256 classes (or C). An explicit class_block is
// used as given, capped at C.
template <typename T>
inline Index resolve_class_block(const Options& o, Index batch, Index classes, std::size_t max_block_bytes) {
  if (o.class_block < 0) fail("Options::class_block = ", o.class_block, " must be >= 0");
  if (classes <= 0) return 0;
  if (o.class_block > 0) return std::min(o.class_block, classes);
  const auto row_bytes = static_cast<std::size_t>(batch > 0 ? batch : 1) * sizeof(T);
  if (static_cast<std::size_t>(classes) <= o.memory_budget / row_bytes) return classes;
  const auto block = static_cast<Index>(std::min(max_block_bytes, o.memory_budget) / row_bytes);
  return std::min(classes, std::max<Index>(block, 256));
}

// Classes per tile of the CPU sweeps for blocks of `block` classes: `class_tile`, or an eighth of
// the block (at least 32) when the block is small, so that up to 8 threads find work. Independent
// of the thread count, and so are the tiles' products and (max, sum) pairs: the loss and dW do
// not change with it.
inline Index tile_for_block(Index block, Index class_tile) {
  return std::min<Index>(class_tile, std::max<Index>(32, (block + 7) / 8));
}

// The CPU engine's buffers for one call: element counts, so that the size query, reserve() and
// the engine allocate exactly the same.
template <typename T>
struct CpuPlan {
  Index batch = 0, dim = 0, classes = 0;  // B, D, this process's classes
  Index block = 0, tile = 0, tiles = 0;   // classes per block, per tile; tiles per block
  int threads = 1;
  bool sharded = false;

  // Forward: X^ (B x D), the block's cosines (B x block), 1/|w_j| (C), per tile and row a (max,
  // sum) pair, and per row |x|, 1/|x|, t, lse, running max, running sum (double), loss, label.
  std::size_t xhat() const { return static_cast<std::size_t>(batch) * dim; }
  std::size_t cosines() const { return static_cast<std::size_t>(batch) * block; }
  std::size_t tile_pairs() const { return static_cast<std::size_t>(batch) * tiles; }
  // Backward: per thread beyond the first a partial dX (B x D), per thread a partial dL/dS (B),
  // dL/dS (B); sharded: this rank's partial dX (B x D) before the all-reduce.
  std::size_t thread_dx_rows() const { return static_cast<std::size_t>(threads - 1) * batch; }
  std::size_t thread_dscale() const { return static_cast<std::size_t>(threads) * batch; }
  std::size_t dx_partial() const { return sharded ? xhat() : 0; }
  // The policy's once-per-row terms: room for kRowTermsBytes per row (every policy of the library
  // fits; a larger row_type grows the buffer on its first call).
  static constexpr std::size_t kRowTermsBytes = 64;
  std::size_t row_terms_bytes() const { return static_cast<std::size_t>(batch) * kRowTermsBytes; }

  // Every buffer above in bytes.
  std::size_t bytes() const {
    const auto b = static_cast<std::size_t>(batch), c = static_cast<std::size_t>(classes);
    constexpr std::size_t per_row_T = 7;  // |x|, 1/|x|, t, lse, running max, row loss, dL/dS
    return sizeof(T) * (xhat() + cosines() + c + per_row_T * b + thread_dx_rows() * static_cast<std::size_t>(dim) +
                        thread_dscale() + dx_partial() + tile_pairs()) +
           sizeof(double) * (b + tile_pairs()) + sizeof(Index) * b + row_terms_bytes();
  }
};

template <typename T>
inline CpuPlan<T> make_cpu_plan(Index batch, Index dim, Index classes, Index block, Index class_tile, int threads,
                                bool sharded) {
  CpuPlan<T> p;
  p.batch = batch;
  p.dim = dim;
  p.classes = classes;
  p.block = (block <= 0 || block >= classes) ? classes : block;
  p.tile = tile_for_block(p.block, class_tile);
  p.tiles = p.block > 0 ? (p.block + p.tile - 1) / p.tile : 0;
  p.threads = threads > 0 ? threads : 1;
  p.sharded = sharded;
  return p;
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
