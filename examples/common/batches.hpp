// The samples of one training batch, shared by the examples' training loops.
#pragma once
#include <cstddef>
#include <optional>
#include <vector>

#include <marginloss/sampling/adaptive_sampler.hpp>

namespace marginloss_examples {

// Batch b of an epoch: B samples drawn by Adaptive Data Sampling when `ads` holds a sampler,
// else the b-th run of B indices of the epoch's shuffled `order`.
inline void select_batch(std::optional<marginloss::AdaptiveSampler>& ads, const std::vector<int>& order, int b, int B,
                         marginloss::IndexVector& batch) {
  if (ads) {
    ads->draw(B, batch);
    return;
  }
  for (int k = 0; k < B; ++k) batch(k) = order[static_cast<std::size_t>(b * B + k)];
}

}  // namespace marginloss_examples
