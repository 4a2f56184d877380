#include "augment.hpp"

#include <algorithm>
#include <cmath>

namespace glyphs {

void to_input(const std::uint8_t* glyph, int size, const Standardise& st, Eigen::Ref<Eigen::RowVectorXf> row) {
  for (int k = 0; k < size * size; ++k) row(k) = (static_cast<float>(glyph[k]) / 255.f - st.mean) * st.inv_std;
}

void Augmenter::operator()(const std::uint8_t* glyph, const Standardise& st, std::mt19937& rng,
                           Eigen::Ref<Eigen::RowVectorXf> row) {
  const int n = size_;
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const float angle = 6.f * 3.14159265f / 180.f * u(rng), scale = 1.f + 0.1f * u(rng), shear = 0.08f * u(rng);
  const float tx = 1.5f * u(rng), ty = 1.5f * u(rng);
  // Inverse map: source = M^-1 (dest - centre - t) + centre, M = scale * rotation * shear.
  const float c = std::cos(angle), s = std::sin(angle);
  const float m00 = scale * c, m01 = scale * (c * shear - s), m10 = scale * s, m11 = scale * (s * shear + c);
  const float det = m00 * m11 - m01 * m10;
  const float i00 = m11 / det, i01 = -m01 / det, i10 = -m10 / det, i11 = m00 / det;
  const float centre = 0.5f * static_cast<float>(n - 1);
  auto pixel = [&](int x, int y) -> float {
    return (x < 0 || y < 0 || x >= n || y >= n) ? 0.f : static_cast<float>(glyph[y * n + x]) / 255.f;
  };
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const float dx = static_cast<float>(x) - centre - tx, dy = static_cast<float>(y) - centre - ty;
      const float sx = i00 * dx + i01 * dy + centre, sy = i10 * dx + i11 * dy + centre;
      const int x0 = static_cast<int>(std::floor(sx)), y0 = static_cast<int>(std::floor(sy));
      const float fx = sx - static_cast<float>(x0), fy = sy - static_cast<float>(y0);
      a_[static_cast<std::size_t>(y * n + x)] =
          (1 - fy) * ((1 - fx) * pixel(x0, y0) + fx * pixel(x0 + 1, y0)) +
          fy * ((1 - fx) * pixel(x0, y0 + 1) + fx * pixel(x0 + 1, y0 + 1));
    }
  // Stroke width.
  const int mode = std::uniform_int_distribution<int>(0, 2)(rng);
  if (mode != 0) {
    const float w = std::uniform_real_distribution<float>(0.f, 1.f)(rng);
    for (int y = 0; y < n; ++y)
      for (int x = 0; x < n; ++x) {
        float v = mode == 1 ? 0.f : 1.f;
        for (int ky = -1; ky <= 1; ++ky)
          for (int kx = -1; kx <= 1; ++kx) {
            const int yy = y + ky, xx = x + kx;
            const float p = (xx < 0 || yy < 0 || xx >= n || yy >= n) ? 0.f : a_[static_cast<std::size_t>(yy * n + xx)];
            v = mode == 1 ? std::max(v, p) : std::min(v, p);
          }
        const std::size_t k = static_cast<std::size_t>(y * n + x);
        b_[k] = (1 - w) * a_[k] + w * v;
      }
    std::swap(a_, b_);
  }
  std::normal_distribution<float> noise(0.f, 0.04f);
  for (int k = 0; k < n * n; ++k) row(k) = (a_[static_cast<std::size_t>(k)] + noise(rng) - st.mean) * st.inv_std;
}

}  // namespace glyphs
