// Input pipeline of the glyph demo: a rendered glyph (size x size bytes) to a standardised
// network input row, optionally augmented like a photo of print:
//   * a small random affine map (rotation +-6 degrees, scale 0.9..1.1, shear +-0.08,
//     shift +-1.5 px), bilinear sampling;
//   * a random stroke-width change: blend with the 3x3 dilation (bolder) or erosion
//     (thinner) of the image, weight uniform in [0, 1], each with probability 1/3;
//   * Gaussian pixel noise, sigma 0.04 of the ink range.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Core>

namespace glyphs {

struct Standardise {
  float mean = 0.f, inv_std = 1.f;  // of the ink values in [0, 1]
};

// Input row from a glyph, without augmentation.
void to_input(const std::uint8_t* glyph, int size, const Standardise& st, Eigen::Ref<Eigen::RowVectorXf> row);

class Augmenter {
 public:
  explicit Augmenter(int size) : size_(size), a_(static_cast<std::size_t>(size * size)), b_(a_) {}
  void operator()(const std::uint8_t* glyph, const Standardise& st, std::mt19937& rng,
                  Eigen::Ref<Eigen::RowVectorXf> row);

 private:
  int size_;
  std::vector<float> a_, b_;  // scratch images
};

}  // namespace glyphs
