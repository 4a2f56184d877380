// Fashion-MNIST's data: the IDX files (gzip-compressed, read with zlib), the class names, the
// held-out split (three classes kept out of training, used only for open-set verification) and
// the subsets taken from a split.
#pragma once
#include <array>
#include <functional>
#include <string>
#include <vector>

#include "types.hpp"

namespace fashion_mnist {

inline constexpr const char* kClassNames[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// The three classes held out of training. The default, one class from each group of similar
// training classes (Pullover ~ Coat/Shirt/T-shirt, Sneaker ~ Sandal/Ankle boot) and Bag;
// --held-out changes it (sensitivity study only).
struct HeldOut {
  std::array<int, 3> classes{{2, 7, 8}};
  bool contains(int label) const { return label == classes[0] || label == classes[1] || label == classes[2]; }
};

struct Split {
  Mat images;              // N x 784, standardised pixels
  std::vector<int> label;  // original label 0..9
};

// DIR/PREFIX-images-idx3-ubyte.gz and DIR/PREFIX-labels-idx1-ubyte.gz; throws std::runtime_error.
Split load_split(const std::string& dir, const std::string& prefix);

// Rows of `s` whose label passes `keep`, at most `limit` of them (in file order, which is
// shuffled in Fashion-MNIST). `map` relabels.
struct Subset {
  Mat images;
  Eigen::VectorXi label;
};

Subset select(const Split& s, const std::function<bool(int)>& keep, const std::function<int(int)>& map, int limit);

}  // namespace fashion_mnist
