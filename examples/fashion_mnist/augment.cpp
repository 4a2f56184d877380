#include "augment.hpp"

namespace fashion_mnist {

void augment(Eigen::Ref<RowVec> row, std::mt19937& rng) {
  static thread_local float buf[784];
  std::uniform_int_distribution<int> shift(-2, 2);
  const int dx = shift(rng), dy = shift(rng);
  const bool flip = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
  const float background = -0.2860f / 0.3530f;
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x) {
      const int sy = y - dy, sx0 = x - dx, sx = flip ? 27 - sx0 : sx0;
      buf[y * 28 + x] = (sy < 0 || sy >= 28 || sx < 0 || sx >= 28) ? background : row(sy * 28 + sx);
    }
  for (int k = 0; k < 784; ++k) row(k) = buf[k];
}

}  // namespace fashion_mnist
