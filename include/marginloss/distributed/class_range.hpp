// marginloss: how the classes are split over the ranks of the class-sharded loss. Free of
// Eigen, so the CPU (distributed/sharded.hpp) and CUDA (cuda/sharded.cuh) paths share it.
#pragma once

#include "../config.hpp"
#include "../errors.hpp"
#include "../value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// A contiguous range of classes, [offset, offset + count): the rows W_shard of one rank.
struct ClassRange {
  Index offset;  ///< global index of the first class
  Index count;   ///< number of classes
};
/// The contiguous class range of `rank` when num_classes are split as evenly as possible over
/// `ranks` processes: the first num_classes % ranks ranks get one class more.
inline ClassRange even_class_range(Index num_classes, int ranks, int rank) {
  if (num_classes < 0) detail::fail("even_class_range: num_classes = ", num_classes, " must be >= 0");
  if (ranks < 1) detail::fail("even_class_range: ranks = ", ranks, " must be >= 1");
  if (rank < 0 || rank >= ranks) detail::fail("even_class_range: rank ", rank, " is not in [0, ", ranks, ")");
  const Index base = num_classes / ranks, extra = num_classes % ranks;
  const Index r = rank;
  return {r * base + (r < extra ? r : extra), base + (r < extra ? 1 : 0)};
}

MARGINLOSS_NAMESPACE_END
