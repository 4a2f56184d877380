// Data augmentation of one standardised 28 x 28 image (a row of 784 pixels).
#pragma once
#include <random>

#include "types.hpp"

namespace fashion_mnist {

// Random +-2-pixel shifts and horizontal flips (clothes are left-right symmetric), background fill.
void augment(Eigen::Ref<RowVec> row, std::mt19937& rng);

}  // namespace fashion_mnist
