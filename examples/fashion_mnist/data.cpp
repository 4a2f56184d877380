#include "data.hpp"

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace fashion_mnist {

namespace {

class GzFile {
 public:
  explicit GzFile(const std::string& path) : f_(gzopen(path.c_str(), "rb")) {
    if (!f_) throw std::runtime_error("cannot open " + path);
  }
  ~GzFile() { gzclose(f_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  void read(void* dst, unsigned bytes, const std::string& what) {
    if (gzread(f_, dst, bytes) != static_cast<int>(bytes)) throw std::runtime_error("short read in " + what);
  }
  std::uint32_t be32(const std::string& what) {
    unsigned char b[4];
    read(b, 4, what);
    return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
  }

 private:
  gzFile f_;
};

}  // namespace

Split load_split(const std::string& dir, const std::string& prefix) {
  const std::string image_path = dir + "/" + prefix + "-images-idx3-ubyte.gz";
  const std::string label_path = dir + "/" + prefix + "-labels-idx1-ubyte.gz";
  GzFile images(image_path), labels(label_path);
  if (images.be32(image_path) != 0x803) throw std::runtime_error(image_path + ": not an IDX3 file");
  const std::uint32_t n = images.be32(image_path), rows = images.be32(image_path), cols = images.be32(image_path);
  if (rows * cols != 784) throw std::runtime_error(image_path + ": images are not 28 x 28");
  if (labels.be32(label_path) != 0x801) throw std::runtime_error(label_path + ": not an IDX1 file");
  if (labels.be32(label_path) != n) throw std::runtime_error(label_path + ": label count differs from images");
  std::vector<unsigned char> pixels(std::size_t(n) * 784), lab(n);
  images.read(pixels.data(), static_cast<unsigned>(pixels.size()), image_path);
  labels.read(lab.data(), n, label_path);
  Split s{Mat(n, 784), std::vector<int>(lab.begin(), lab.end())};
  // Fashion-MNIST training-set pixel mean and standard deviation.
  const float mean = 0.2860f, inv_std = 1.f / 0.3530f;
  for (std::size_t k = 0; k < pixels.size(); ++k) s.images.data()[k] = (pixels[k] / 255.f - mean) * inv_std;
  return s;
}

Subset select(const Split& s, const std::function<bool(int)>& keep, const std::function<int(int)>& map, int limit) {
  std::vector<int> rows;
  for (int i = 0; i < static_cast<int>(s.label.size()) && static_cast<int>(rows.size()) < limit; ++i)
    if (keep(s.label[i])) rows.push_back(i);
  Subset out{Mat(rows.size(), 784), Eigen::VectorXi(rows.size())};
  for (std::size_t k = 0; k < rows.size(); ++k) {
    out.images.row(k) = s.images.row(rows[k]);
    out.label(k) = map(s.label[rows[k]]);
  }
  return out;
}

}  // namespace fashion_mnist
