// Open-set verification on Fashion-MNIST with each loss: a small embedding network (an MLP,
// 784 -> 256 -> ReLU -> D, or with --net conv a small conv net) is trained with manual backpropagation on 7 of the 10 classes; the
// 3 held-out classes (test split) are used only to measure verification by cosine similarity
// of the embeddings, as in the face-recognition papers (train on some identities, verify
// others).
//
//   ./fashion_mnist [--data DIR] [--out DIR] [--full] [--quick] [--epochs N] [--dim D]
//                   [--only LIST] [--validate] [--no-2d] [--no-plots] [--help for more]
//
// Writes OUT/fashion_mnist_results.json and, when gnuplot is installed, the figures
// OUT/fashion_mnist_roc.png, OUT/fashion_mnist_2d_<loss>.png (and with --margin-sweep
// OUT/fashion_mnist_margin_sweep.png). See README.md next to this
// file for the protocol and the results.
#include <marginloss/marginloss.hpp>
#include <marginloss/sampling/adaptive_sampler.hpp>

#include <Eigen/QR>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <memory>
#include <optional>
#include <vector>

namespace ml = marginloss;
using Mat = ml::RowMatrix<float>;
using RowVec = Eigen::RowVectorXf;

namespace {

constexpr int kSkip = 77;  // CTest's skip code (dataset not installed)
constexpr double kPi = 3.14159265358979323846;

const char* const kClassNames[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
// Held out of training, used only for open-set verification: one class from each group of
// similar training classes (Pullover ~ Coat/Shirt/T-shirt, Sneaker ~ Sandal/Ankle boot) and Bag.
int kHeldOut[3] = {2, 7, 8};  // --held-out changes it (sensitivity study only)

bool is_held_out(int label) { return label == kHeldOut[0] || label == kHeldOut[1] || label == kHeldOut[2]; }

// ---------------------------------------------------------------------------------------------
// Data: the IDX files, gzip-compressed, read with zlib.

struct Split {
  Mat images;              // N x 784, standardised pixels
  std::vector<int> label;  // original label 0..9
};

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

// Rows of `s` whose label passes `keep`, at most `limit` of them (in file order, which is
// shuffled in Fashion-MNIST). `map` relabels.
struct Subset {
  Mat images;
  Eigen::VectorXi label;
};

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

// ---------------------------------------------------------------------------------------------
// The embedding networks, trained by SGD with momentum and manual backpropagation:
//   mlp:  x = relu(a W1 + b1) W2 + b2  (784 -> 256 -> ReLU -> D, dropout on the hidden layer)
//   conv: conv 5x5x8 -> ReLU -> max-pool 2 -> conv 5x5x16 -> ReLU -> max-pool 2 -> FC 256 -> D
//         (im2col + Eigen products, channels last)

struct Param {
  Mat value, grad, velocity;
  bool decay;  // weight decay applies (weights, not biases)
  Param(Eigen::Index r, Eigen::Index c, bool d)
      : value(Mat::Zero(r, c)), grad(Mat::Zero(r, c)), velocity(Mat::Zero(r, c)), decay(d) {}
  void step(float lr, float momentum, float wd) {
    if (decay)
      velocity = momentum * velocity + grad + wd * value;
    else
      velocity = momentum * velocity + grad;
    value -= lr * velocity;
  }
  void init(std::mt19937& rng, float stddev) {
    std::normal_distribution<float> normal(0.f, 1.f);
    for (Eigen::Index k = 0; k < value.size(); ++k) value.data()[k] = stddev * normal(rng);
  }
};

// Batch normalisation of the embedding without a learnable scale (--bn; ArcFace's "E" output
// head, BN after the last FC with gamma fixed to 1): x <- (x - mean_B) / sqrt(var_B + eps) over
// the batch in training, with running statistics (momentum 0.9) at evaluation.
//   dL/dx = (B g - sum_B g - xh sum_B(g xh)) / (B sigma),  g = dL/dxh,  per column.
class EmbeddingBatchNorm {
 public:
  void forward(Mat& X, bool training) {
    if (running_mean_.size() != X.cols()) {
      running_mean_ = Eigen::RowVectorXf::Zero(X.cols());
      running_var_ = Eigen::RowVectorXf::Ones(X.cols());
    }
    if (training) {
      const Eigen::RowVectorXf mean = X.colwise().mean();
      X.rowwise() -= mean;
      const Eigen::RowVectorXf var = X.array().square().colwise().mean();
      sigma_ = (var.array() + kEps).sqrt();
      X.array().rowwise() /= sigma_.array();
      xh_ = X;
      running_mean_ = 0.9f * running_mean_ + 0.1f * mean;
      running_var_ = 0.9f * running_var_ + 0.1f * var;
    } else {
      X.rowwise() -= running_mean_;
      X.array().rowwise() /= (running_var_.array() + kEps).sqrt();
    }
  }
  const Mat& backward(const Mat& g) {
    const float B = static_cast<float>(g.rows());
    const Eigen::RowVectorXf sum = g.colwise().sum(), dot = (g.array() * xh_.array()).colwise().sum();
    dx_ = B * g;
    dx_.rowwise() -= sum;
    dx_.array() -= xh_.array().rowwise() * dot.array();
    dx_.array().rowwise() /= B * sigma_.array();
    return dx_;
  }

 private:
  static constexpr float kEps = 1e-5f;
  Mat xh_, dx_;
  Eigen::RowVectorXf sigma_, running_mean_, running_var_;
};

class Net {
 public:
  static constexpr int kIn = 784;
  virtual ~Net() = default;
  // X (B x D) from A (B x 784); keeps what backward needs. `rng` non-null: training (dropout).
  virtual void forward(const Mat& A, Mat& X, std::mt19937* rng) = 0;
  virtual void backward(const Mat& A, const Mat& dX) = 0;
  virtual std::vector<Param*> params() = 0;
  virtual int dim() const = 0;
  void step(float lr, float momentum, float wd) {
    for (Param* p : params()) p->step(lr, momentum, wd);
  }
  // Embeddings of many inputs, in chunks.
  Mat embed(const Mat& A) {
    Mat out(A.rows(), dim()), X, chunk;
    for (Eigen::Index first = 0; first < A.rows(); first += 256) {
      const Eigen::Index n = std::min<Eigen::Index>(256, A.rows() - first);
      chunk = A.middleRows(first, n);
      X.resize(n, dim());
      forward(chunk, X, nullptr);
      out.middleRows(first, n) = X;
    }
    return out;
  }
};

class MlpNet final : public Net {
 public:
  static constexpr int kHidden = 256;
  MlpNet(int dim, float dropout, bool bn, std::mt19937& rng)
      : W1(kIn, kHidden, true), b1(1, kHidden, false), W2(kHidden, dim, true), b2(1, dim, false), dropout_(dropout),
        bn_(bn) {
    W1.init(rng, std::sqrt(2.f / kIn));     // He
    W2.init(rng, std::sqrt(1.f / kHidden)); // LeCun
  }
  void forward(const Mat& A, Mat& X, std::mt19937* rng) override {
    H.resize(A.rows(), kHidden);
    H.noalias() = A * W1.value;
    H.rowwise() += b1.value.row(0);
    R = H.cwiseMax(0.f);
    mask_ = rng != nullptr && dropout_ > 0.f;
    if (mask_) {  // inverted dropout
      M.resize(A.rows(), kHidden);
      std::bernoulli_distribution keep(1.0 - static_cast<double>(dropout_));
      const float scale = 1.f / (1.f - dropout_);
      for (Eigen::Index k = 0; k < M.size(); ++k) M.data()[k] = keep(*rng) ? scale : 0.f;
      R.array() *= M.array();
    }
    X.noalias() = R * W2.value;
    X.rowwise() += b2.value.row(0);
    if (bn_) norm_.forward(X, rng != nullptr);
  }
  void backward(const Mat& A, const Mat& dXn) override {
    const Mat& dX = bn_ ? norm_.backward(dXn) : dXn;
    W2.grad.noalias() = R.transpose() * dX;
    b2.grad = dX.colwise().sum();
    dR.resize(dX.rows(), kHidden);
    dR.noalias() = dX * W2.value.transpose();
    if (mask_) dR.array() *= M.array();
    dR = (H.array() > 0.f).select(dR, 0.f);
    W1.grad.noalias() = A.transpose() * dR;
    b1.grad = dR.colwise().sum();
  }
  std::vector<Param*> params() override { return {&W1, &b1, &W2, &b2}; }
  int dim() const override { return static_cast<int>(W2.value.cols()); }

 private:
  Param W1, b1, W2, b2;
  float dropout_;
  bool bn_, mask_ = false;
  EmbeddingBatchNorm norm_;
  Mat H, R, dR, M;  // per-batch activations, allocated once
};

class ConvNet final : public Net {
 public:
  static constexpr int kC1 = 8, kC2 = 16, kK = 5, kHidden = 256;
  ConvNet(int dim, float dropout, bool bn, std::mt19937& rng)
      : K1(kK * kK, kC1, true), c1(1, kC1, false), K2(kK * kK * kC1, kC2, true), c2(1, kC2, false),
        W3(16 * kC2, kHidden, true), b3(1, kHidden, false), W4(kHidden, dim, true), b4(1, dim, false),
        dropout_(dropout), bn_(bn) {
    K1.init(rng, std::sqrt(2.f / (kK * kK)));
    K2.init(rng, std::sqrt(2.f / (kK * kK * kC1)));
    W3.init(rng, std::sqrt(2.f / (16 * kC2)));
    W4.init(rng, std::sqrt(1.f / kHidden));
  }
  void forward(const Mat& A, Mat& X, std::mt19937* rng) override {
    const Eigen::Index B = A.rows();
    // conv1: 28x28x1 -> 24x24xC1, rows (b, y, x).
    cols1.resize(B * 576, kK * kK);
    for (Eigen::Index b = 0; b < B; ++b)
      for (int y = 0; y < 24; ++y)
        for (int x = 0; x < 24; ++x) {
          float* dst = cols1.data() + ((b * 24 + y) * 24 + x) * kK * kK;
          for (int ky = 0; ky < kK; ++ky)
            for (int kx = 0; kx < kK; ++kx) *dst++ = A(b, (y + ky) * 28 + x + kx);
        }
    O1.resize(B * 576, kC1);
    O1.noalias() = cols1 * K1.value;
    O1.rowwise() += c1.value.row(0);
    O1 = O1.cwiseMax(0.f);
    pool(O1, B, 24, kC1, P1, arg1);  // -> (B*144) x C1
    // conv2: 12x12xC1 -> 8x8xC2, im2col columns (ky, kx, c).
    cols2.resize(B * 64, kK * kK * kC1);
    for (Eigen::Index b = 0; b < B; ++b)
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x) {
          float* dst = cols2.data() + ((b * 8 + y) * 8 + x) * kK * kK * kC1;
          for (int ky = 0; ky < kK; ++ky)
            for (int kx = 0; kx < kK; ++kx, dst += kC1)
              std::copy_n(P1.data() + ((b * 12 + y + ky) * 12 + x + kx) * kC1, kC1, dst);
        }
    O2.resize(B * 64, kC2);
    O2.noalias() = cols2 * K2.value;
    O2.rowwise() += c2.value.row(0);
    O2 = O2.cwiseMax(0.f);
    pool(O2, B, 8, kC2, P2, arg2);  // -> (B*16) x C2 = B x (16*C2) in memory
    const Eigen::Map<const Mat> F(P2.data(), B, 16 * kC2);
    H.resize(B, kHidden);
    H.noalias() = F * W3.value;
    H.rowwise() += b3.value.row(0);
    R = H.cwiseMax(0.f);
    mask_ = rng != nullptr && dropout_ > 0.f;
    if (mask_) {
      M.resize(B, kHidden);
      std::bernoulli_distribution keep(1.0 - static_cast<double>(dropout_));
      const float scale = 1.f / (1.f - dropout_);
      for (Eigen::Index k = 0; k < M.size(); ++k) M.data()[k] = keep(*rng) ? scale : 0.f;
      R.array() *= M.array();
    }
    X.noalias() = R * W4.value;
    X.rowwise() += b4.value.row(0);
    if (bn_) norm_.forward(X, rng != nullptr);
  }
  void backward(const Mat& /*A*/, const Mat& dXn) override {
    const Mat& dX = bn_ ? norm_.backward(dXn) : dXn;
    const Eigen::Index B = dX.rows();
    W4.grad.noalias() = R.transpose() * dX;
    b4.grad = dX.colwise().sum();
    dR.resize(B, kHidden);
    dR.noalias() = dX * W4.value.transpose();
    if (mask_) dR.array() *= M.array();
    dR = (H.array() > 0.f).select(dR, 0.f);
    const Eigen::Map<const Mat> F(P2.data(), B, 16 * kC2);
    W3.grad.noalias() = F.transpose() * dR;
    b3.grad = dR.colwise().sum();
    dF.resize(B, 16 * kC2);
    dF.noalias() = dR * W3.value.transpose();
    unpool(dF, arg2, O2, dO2);  // ReLU mask included
    K2.grad.noalias() = cols2.transpose() * dO2;
    c2.grad = dO2.colwise().sum();
    dcols2.resize(B * 64, kK * kK * kC1);
    dcols2.noalias() = dO2 * K2.value.transpose();
    dP1.setZero(B * 144, kC1);
    for (Eigen::Index b = 0; b < B; ++b)
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x) {
          const float* src = dcols2.data() + ((b * 8 + y) * 8 + x) * kK * kK * kC1;
          for (int ky = 0; ky < kK; ++ky)
            for (int kx = 0; kx < kK; ++kx, src += kC1) {
              float* dst = dP1.data() + ((b * 12 + y + ky) * 12 + x + kx) * kC1;
              for (int c = 0; c < kC1; ++c) dst[c] += src[c];
            }
        }
    unpool(dP1, arg1, O1, dO1);
    K1.grad.noalias() = cols1.transpose() * dO1;
    c1.grad = dO1.colwise().sum();
  }
  std::vector<Param*> params() override { return {&K1, &c1, &K2, &c2, &W3, &b3, &W4, &b4}; }
  int dim() const override { return static_cast<int>(W4.value.cols()); }

 private:
  // 2x2 max-pool of O ((B*n*n) x C, rows (b, y, x)) into P ((B*(n/2)^2) x C); arg: source row.
  static void pool(const Mat& O, Eigen::Index B, int n, int C, Mat& P, std::vector<int>& arg) {
    const int h = n / 2;
    P.resize(B * h * h, C);
    arg.resize(static_cast<std::size_t>(P.size()));
    for (Eigen::Index b = 0; b < B; ++b)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < h; ++x) {
          const Eigen::Index out = (b * h + y) * h + x;
          const Eigen::Index r0 = (b * n + 2 * y) * n + 2 * x;
          const Eigen::Index src[4] = {r0, r0 + 1, r0 + n, r0 + n + 1};
          for (int c = 0; c < C; ++c) {
            Eigen::Index best = src[0];
            for (int k = 1; k < 4; ++k)
              if (O(src[k], c) > O(best, c)) best = src[k];
            P(out, c) = O(best, c);
            arg[static_cast<std::size_t>(out * C + c)] = static_cast<int>(best);
          }
        }
  }
  // Gradient of pool followed by the preceding ReLU: dP (as a flat array) scattered into dO.
  static void unpool(const Mat& dP, const std::vector<int>& arg, const Mat& O, Mat& dO) {
    const Eigen::Index C = O.cols();
    dO.setZero(O.rows(), C);
    for (std::size_t k = 0; k < arg.size(); ++k) {
      const Eigen::Index c = static_cast<Eigen::Index>(k) % C;
      if (O(arg[k], c) > 0.f) dO(arg[k], c) += dP.data()[k];
    }
  }

  Param K1, c1, K2, c2, W3, b3, W4, b4;
  float dropout_;
  bool bn_, mask_ = false;
  EmbeddingBatchNorm norm_;
  Mat cols1, O1, P1, cols2, O2, P2, H, R, M, dR, dF, dO2, dcols2, dP1, dO1;
  std::vector<int> arg1, arg2;
};

// Random +-2-pixel shifts and horizontal flips (clothes are left-right symmetric), background fill.
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

// ---------------------------------------------------------------------------------------------
// Losses. Each head turns a batch of embeddings and the class weights W (C x D) into the loss and
// dL/dX, dL/dW. Hooks: before_step() runs before the forward pass, after_step(lr) after the
// optimiser step (AdaptiveFace's margins); with `adaptive_sampling` true the batches are drawn by
// Adaptive Data Sampling (as with --ads for every loss); summary() is printed after training.

using BoolVector = Eigen::Matrix<bool, Eigen::Dynamic, 1>;

struct HeadHooks {
  static constexpr bool adaptive_sampling = false;
  void before_step() {}
  void after_step(float /*lr*/) {}
  std::string summary() const { return {}; }
};

// Plain softmax cross-entropy of a bias-free linear classifier, logits = X W^T: the baseline.
struct SoftmaxHead : HeadHooks {
  Mat logits;  // B x C, overwritten with dL/dlogits
  float operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX, Mat& dW) {
    const Eigen::Index B = X.rows(), C = W.rows();
    logits.resize(B, C);
    logits.noalias() = X * W.transpose();
    double total = 0;
    for (Eigen::Index i = 0; i < B; ++i) {
      auto z = logits.row(i);
      const float zmax = z.maxCoeff();
      z.array() = (z.array() - zmax).exp();
      const float sum = z.sum();
      total += std::log(static_cast<double>(sum)) - (std::log(static_cast<double>(z(y(i)))));
      z /= sum * static_cast<float>(B);
      z(y(i)) -= 1.f / static_cast<float>(B);
    }
    dX.noalias() = logits * W;
    dW.noalias() = logits.transpose() * X;
    return static_cast<float>(total / static_cast<double>(B));
  }
  static bool normalised() { return false; }
};

// A policy written in user code through the public contract (policies/common.hpp): CosFace's
// additive cosine margin with either sign, z_iy = s (t - m), z_ij = s c_ij, for the margin sweep
// (--margin-sweep). m = 0 is NormFace and m > 0 is CosFace, the same functions as the library's
// policies; marginloss's CosFace rejects m < 0, the margin Liu et al. ("Negative Margin Matters",
// ECCV 2020) found to transfer better to novel classes.
struct SignedCosineMargin {
  using value_type = float;
  struct row_type {
    ml::ValueSlope<float> target;
  };
  static constexpr bool plain_non_target = true;
  static constexpr const char* name = "SignedCosineMargin";
  float s = 8.f, m = -0.1f;
  void validate() const {
    if (!(s > 0.f) || !std::isfinite(m)) throw ml::invalid_argument("SignedCosineMargin: s must be > 0, m finite");
  }
  row_type row(float t, ml::Index) const { return {{t - m, 1.f}}; }
  ml::ValueSlope<float> non_target(float c, const row_type&) const { return {c, 1.f}; }
  float scale(float) const { return s; }
  bool scale_is_feature_norm() const { return false; }
};
static_assert(ml::is_margin_policy_v<SignedCosineMargin>);

// Any marginloss policy; `on_step` runs before every step (SphereFace's lambda annealing).
template <typename Policy>
struct MarginHead : HeadHooks {
  Policy policy;
  std::function<void(Policy&)> on_step;
  ml::Workspace<float> ws;
  float operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX, Mat& dW) {
    // CurricularFace: tau from this batch's raw target cosines, before use (official code).
    if constexpr (std::is_same_v<Policy, ml::CurricularFace<float>>) policy.update_tau(ml::target_cosines(X, W, y));
    return ml::forward_backward(policy, X, W, y, dX, dW, ws);
  }
  void before_step() {
    if (on_step) on_step(policy);
  }
  static bool normalised() { return true; }
};

// AdaptiveFace: AdaM-Softmax (ml::AdaptiveMargin, one learnable margin per class, dL/dm from the
// library; SGD with momentum at the network's learning rate, projected to [0, 1] after each step)
// with Adaptive Data Sampling (see train()). Hard Prototype Mining is not used: it restricts the loss to the
// classes nearest to the batch's, and with 7 classes every class is among them.
struct AdaptiveHead : HeadHooks {
  static constexpr bool adaptive_sampling = true;
  ml::AdaptiveMargin<float> policy;
  ml::Vector<float> dm, velocity;
  ml::Workspace<float> ws;
  AdaptiveHead(float s, float m0, float lambda_m, int classes)
      : dm(ml::Vector<float>::Zero(classes)), velocity(ml::Vector<float>::Zero(classes)) {
    policy.s = s;
    policy.margins = ml::Vector<float>::Constant(classes, m0);
    policy.lambda_m = lambda_m;
  }
  float operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX, Mat& dW) {
    return ml::forward_backward(policy, X, W, y, dX, dW, dm, ws);
  }
  void after_step(float lr) {
    velocity = 0.9f * velocity + dm;
    policy.margins -= lr * velocity;
    ml::project_margins(policy.margins);
  }
  std::string summary() const {
    std::string out = "learned margins:";
    char buf[16];
    for (Eigen::Index k = 0; k < policy.margins.size(); ++k) {
      std::snprintf(buf, sizeof buf, " %.3f", static_cast<double>(policy.margins(k)));
      out += buf;
    }
    return out;
  }
  static bool normalised() { return true; }
};

// ---------------------------------------------------------------------------------------------
// Training.

struct TrainConfig {
  int epochs = 8;
  int batch = 128;
  int dim = 32;
  float lr = 0.05f;  // peak; cosine decay to 0 after one epoch of linear warm-up
  float momentum = 0.9f;
  float wd = 5e-4f;
  float dropout = 0.f;  // on the hidden layer
  bool aug = false;     // random shifts and flips
  bool conv = false;    // ConvNet instead of MlpNet
  bool bn = false;      // batch normalisation of the embedding
  bool ads = false;     // Adaptive Data Sampling for every loss
  unsigned seed = 1;
  bool verbose = true;
};

struct Trained {
  Mat W;  // class weights (C x D)
  std::unique_ptr<Net> net;
};

template <typename Head>
Trained train(const std::string& name, Head head, const Subset& data, int classes, const TrainConfig& cfg) {
  std::mt19937 rng(cfg.seed);
  std::unique_ptr<Net> net;
  if (cfg.conv)
    net = std::make_unique<ConvNet>(cfg.dim, cfg.dropout, cfg.bn, rng);
  else
    net = std::make_unique<MlpNet>(cfg.dim, cfg.dropout, cfg.bn, rng);
  Param W(classes, cfg.dim, true);
  {
    std::normal_distribution<float> normal(0.f, 1.f);
    const float s = std::sqrt(1.f / cfg.dim);
    for (Eigen::Index k = 0; k < W.value.size(); ++k) W.value.data()[k] = s * normal(rng);
  }
  const int n = static_cast<int>(data.images.rows()), B = cfg.batch, steps_per_epoch = n / B;
  const long total_steps = static_cast<long>(steps_per_epoch) * cfg.epochs;
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;

  // Every buffer of the loop, allocated once.
  Mat A(B, Net::kIn), X(B, cfg.dim), dX(B, cfg.dim);
  Eigen::VectorXi y(B);
  Mat logits(B, classes);
  ml::IndexVector batch(B);
  BoolVector correct(B);
  // Adaptive Data Sampling (AdaptiveFace): batches drawn by per-sample weights, raised for the
  // samples the classifier got wrong in their last batch and lowered for the right ones.
  std::optional<ml::AdaptiveSampler> ads;
  if (cfg.ads || Head::adaptive_sampling) ads.emplace(n, cfg.seed);
  long step = 0;
  for (int epoch = 0; epoch < cfg.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = n - 1; i > 0; --i) std::swap(order[i], order[std::uniform_int_distribution<int>(0, i)(rng)]);
    double loss_sum = 0;
    long hits = 0;
    float lr = 0;
    for (int b = 0; b < steps_per_epoch; ++b, ++step) {
      if (ads)
        ads->draw(B, batch);
      else
        for (int k = 0; k < B; ++k) batch(k) = order[b * B + k];
      for (int k = 0; k < B; ++k) {
        A.row(k) = data.images.row(batch(k));
        y(k) = data.label(batch(k));
        if (cfg.aug) augment(A.row(k), rng);
      }
      const double warm = static_cast<double>(steps_per_epoch);
      lr = cfg.lr * static_cast<float>(step < warm ? (step + 1) / warm
                                                   : 0.5 * (1 + std::cos(kPi * (step - warm) / (total_steps - warm))));
      head.before_step();
      net->forward(A, X, &rng);
      loss_sum += head(X, W.value, y, dX, W.grad);
      net->backward(A, dX);
      // Training accuracy on the batch: argmax of the logits X W^T for softmax, of the cosines
      // (X W^T divided by the class-weight norms) for the normalised losses.
      logits.noalias() = X * W.value.transpose();
      if (Head::normalised()) logits.array().rowwise() /= W.value.rowwise().norm().transpose().array();
      for (int k = 0; k < B; ++k) {
        Eigen::Index arg;
        logits.row(k).maxCoeff(&arg);
        correct(k) = arg == y(k);
      }
      hits += correct.count();
      net->step(lr, cfg.momentum, cfg.wd);
      W.step(lr, cfg.momentum, cfg.wd);
      head.after_step(lr);
      if (ads) ads->update(batch, correct);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (cfg.verbose)
      std::printf("  %-10s epoch %2d/%d  loss %7.4f  train acc %.4f  lr %.4f  |x| %.2f  %.1fs\n", name.c_str(),
                  epoch + 1, cfg.epochs, loss_sum / steps_per_epoch,
                  static_cast<double>(hits) / (static_cast<double>(steps_per_epoch) * B), lr,
                  X.rowwise().norm().mean(), secs);
    std::fflush(stdout);
  }
  if (cfg.verbose && !head.summary().empty()) std::printf("  %-10s %s\n", name.c_str(), head.summary().c_str());
  return Trained{W.value, std::move(net)};
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

Mat normalise_rows(const Mat& M) {
  Mat out = M;
  for (Eigen::Index i = 0; i < out.rows(); ++i) {
    const float norm = out.row(i).norm();
    if (norm > 0) out.row(i) /= norm;
  }
  return out;
}

struct Verification {
  double auc = 0, tar_1e2 = 0, tar_1e3 = 0, intra_deg = 0, inter_deg = 0;
  std::vector<double> far_grid, tar_grid;  // ROC curve on a log grid of FARs
};

// All pairs i < j of the embeddings: genuine (same class) and impostor scores by cosine.
Verification verify(const Mat& emb, const Eigen::VectorXi& label) {
  const Mat E = normalise_rows(emb);
  const Mat S = E * E.transpose();
  const Eigen::Index N = E.rows();
  std::vector<float> pos, neg;
  pos.reserve(N * N / 4);
  neg.reserve(N * N / 2);
  double intra = 0, inter = 0;
  for (Eigen::Index i = 0; i < N; ++i)
    for (Eigen::Index j = i + 1; j < N; ++j) {
      const float c = std::clamp(S(i, j), -1.f, 1.f);
      const double angle = std::acos(static_cast<double>(c)) * 180.0 / kPi;
      if (label(i) == label(j)) {
        pos.push_back(c);
        intra += angle;
      } else {
        neg.push_back(c);
        inter += angle;
      }
    }
  Verification v;
  if (pos.empty() || neg.empty()) return v;
  v.intra_deg = intra / pos.size();
  v.inter_deg = inter / neg.size();
  std::sort(pos.begin(), pos.end());
  std::sort(neg.begin(), neg.end());
  // AUC = P(genuine > impostor) + P(tie) / 2, by merging the sorted lists.
  double below = 0;
  std::size_t lo = 0, hi = 0;
  for (float p : pos) {
    while (lo < neg.size() && neg[lo] < p) ++lo;
    if (hi < lo) hi = lo;
    while (hi < neg.size() && neg[hi] <= p) ++hi;
    below += static_cast<double>(lo) + 0.5 * static_cast<double>(hi - lo);
  }
  v.auc = below / (static_cast<double>(pos.size()) * static_cast<double>(neg.size()));
  // TAR at FAR f: the threshold leaves at most floor(f * impostors) impostor scores above it.
  auto tar_at = [&](double far) {
    const std::size_t k = static_cast<std::size_t>(std::floor(far * static_cast<double>(neg.size())));
    if (k >= neg.size()) return 1.0;
    const float threshold = neg[neg.size() - 1 - k];
    const auto above = pos.end() - std::upper_bound(pos.begin(), pos.end(), threshold);
    return static_cast<double>(above) / static_cast<double>(pos.size());
  };
  v.tar_1e2 = tar_at(1e-2);
  v.tar_1e3 = tar_at(1e-3);
  for (int k = 0; k <= 120; ++k) {
    const double far = std::pow(10.0, -6.0 + 6.0 * k / 120.0);
    v.far_grid.push_back(far);
    v.tar_grid.push_back(tar_at(far));
  }
  return v;
}

// Closed-set accuracy: argmax of the cosine to the class weights (logits for softmax).
double closed_set_accuracy(const Mat& emb, const Mat& W, const Eigen::VectorXi& label, bool cosine) {
  const Mat scores = cosine ? Mat(emb * normalise_rows(W).transpose()) : Mat(emb * W.transpose());
  long correct = 0;
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index arg;
    scores.row(i).maxCoeff(&arg);
    correct += (arg == label(i));
  }
  return static_cast<double>(correct) / static_cast<double>(scores.rows());
}

// --span: where the held-out embeddings' verification power lives. The embedding space splits
// into span(W) (the C class-weight directions, all the loss sees) and its orthogonal
// complement; each part is verified on its own, and the complement's share of the energy is
// printed.
void print_span_diagnostic(const char* loss, const Mat& emb, const Mat& W, const Eigen::VectorXi& label) {
  const Eigen::MatrixXf Wt = W.transpose();
  Eigen::HouseholderQR<Eigen::MatrixXf> qr(Wt);
  const Eigen::Index r = std::min(W.rows(), W.cols());
  const Eigen::MatrixXf Q = qr.householderQ() * Eigen::MatrixXf::Identity(W.cols(), r);  // D x r, orthonormal
  const Mat in_span = emb * Q * Q.transpose();
  const Mat complement = emb - in_span;
  const double share = complement.squaredNorm() / std::max(1e-30, static_cast<double>(emb.squaredNorm()));
  const Verification a = verify(in_span, label);
  std::printf("  %-10s span(W): AUC %.4f TAR@1e-3 %.4f | complement (%.1f%% of the energy): ", loss, a.auc,
              a.tar_1e3, 100 * share);
  if (share > 1e-12) {  // D <= C: span(W) is usually the whole space
    const Verification b = verify(complement, label);
    std::printf("AUC %.4f TAR@1e-3 %.4f\n", b.auc, b.tar_1e3);
  } else {
    std::printf("empty\n");
  }
}

struct Row {
  std::string loss;
  Verification v;
  double closed_acc = 0;
  double seconds = 0;
};

// ---------------------------------------------------------------------------------------------
// Options and the loss table.

struct Options {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string out = ".";
  std::string only;
  bool full = false, quick = false, validate = false, two_d = true, plots = true;
  int epochs = 0, dim = 128;
  // Hyper-parameters (see train_loss for their defaults).
  // Chosen with --validate (README.md): a small scale and small margins, a 128-d embedding,
  // dropout 0.3 and augmentation, the setting in which the margin losses came closest to softmax.
  float s = 8.f, cos_m = 0.1f, arc_m = 0.2f, lr = 0.05f, wd = 5e-4f, dropout = 0.3f, mv_t = 1.2f, m_h = 0.1f;
  float lambda_m = 1.f;
  std::vector<float> margin_sweep;  // --margin-sweep: additive cosine margins, either sign
  int sphere_m = 4;
  // ArcFace's gradient: straight-through (the margin's derivative taken as 1, as insightface's
  // arcface_torch computes it) by default; --arc-grad exact for the true derivative, which
  // keeps pulling every sample towards its class direction (README.md).
  bool arc_straight = true, sphere_fixed = false, span = false;
  bool conv = false, aug = true, bn = false, ads = false;
  int mining = -1;  // -1: default (on, off with --quick)
  unsigned seed = 1;
  int held_out[3] = {2, 7, 8};
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: fashion_mnist [--data DIR] [--out DIR] [--full] [--quick] [--epochs N] [--dim D]\n"
               "                     [--only LIST] [--validate] [--no-2d] [--no-plots] [options]\n"
               "  --data DIR   Fashion-MNIST IDX .gz files (default /usr/share/datasets/fashion-mnist)\n"
               "  --out DIR    where fashion_mnist_results.json and the figures go (default .)\n"
               "  --full       longer training (30 epochs instead of 8, 2-D runs of every loss)\n"
               "  --quick      smoke run: 6000 training and 600 held-out images, 1 epoch, no 2-D runs\n"
               "  --epochs N   epochs of the main runs\n"
               "  --dim D      embedding dimension of the main runs (default 128)\n"
               "  --only LIST  comma-separated losses: softmax, normface, cosface, arcface, sphereface,\n"
               "               mvsoftmax, curricularface, svsoftmax, ammsoftmax, adaptiveface\n"
               "  --mining / --no-mining  include the mining and adaptive losses (mvsoftmax,\n"
               "               curricularface, svsoftmax, ammsoftmax, adaptiveface); default on (off with --quick)\n"
               "  --net mlp|conv  embedding network (default mlp; conv is about 10x slower)\n"
               "  --aug / --no-aug  random +-2-pixel shifts and horizontal flips (default on)\n"
               "  --dropout P  on the hidden layer (default 0.3)\n"
               "  --bn         batch normalisation of the embedding (ArcFace's output head; default off)\n"
               "  --ads        Adaptive Data Sampling for every loss (adaptiveface always uses it)\n"
               "  --s S  --cos-m M  --arc-m M  --sphere-m M  --mv-t T  --m-h M  --lambda-m L  --lr LR  --wd WD\n"
               "  --arc-grad straight|exact  ArcFace's margin derivative: 1 (arcface_torch; default) or the true one\n"
               "  --sphere-scale norm|fixed  SphereFace's scale: the feature norm (official; default) or s\n"
               "  --margin-sweep M1,M2,...  after the losses, the additive cosine margin s(cos - m) at each m,\n"
               "               either sign (m = 0: NormFace, m > 0: CosFace); table, .dat and a figure\n"
               "  --span       also verify each embedding's part in span(W) and its orthogonal complement\n"
               "  --seed N     seed of initialisation, shuffling, dropout and augmentation (default 1)\n"
               "  --held-out A,B,C  the three held-out classes (default 2,7,8: Pullover, Sneaker, Bag);\n"
               "               for the split-sensitivity study, not for choosing hyper-parameters\n"
               "  --validate   report on the held-out classes' *training* split (never trained on)\n"
               "               instead of the test split: the split used to choose hyper-parameters\n"
               "  --no-2d      skip the 2-D runs;  --no-plots  skip gnuplot\n");
  std::exit(code);
}

[[noreturn]] void usage_error(const std::string& what) {
  std::fprintf(stderr, "fashion_mnist: %s (--help for the options)\n", what.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--data") o.data = value();
    else if (a == "--out") o.out = value();
    else if (a == "--only") o.only = value();
    else if (a == "--full") o.full = true;
    else if (a == "--quick") o.quick = true;
    else if (a == "--validate") o.validate = true;
    else if (a == "--no-2d") o.two_d = false;
    else if (a == "--no-plots") o.plots = false;
    else if (a == "--epochs") o.epochs = std::atoi(value().c_str());
    else if (a == "--dim") o.dim = std::atoi(value().c_str());
    else if (a == "--s") o.s = std::strtof(value().c_str(), nullptr);
    else if (a == "--cos-m") o.cos_m = std::strtof(value().c_str(), nullptr);
    else if (a == "--arc-m") o.arc_m = std::strtof(value().c_str(), nullptr);
    else if (a == "--sphere-m") o.sphere_m = std::atoi(value().c_str());
    else if (a == "--lr") o.lr = std::strtof(value().c_str(), nullptr);
    else if (a == "--wd") o.wd = std::strtof(value().c_str(), nullptr);
    else if (a == "--dropout") o.dropout = std::strtof(value().c_str(), nullptr);
    else if (a == "--mv-t") o.mv_t = std::strtof(value().c_str(), nullptr);
    else if (a == "--m-h") o.m_h = std::strtof(value().c_str(), nullptr);
    else if (a == "--margin-sweep") {
      const std::string v = value();
      std::stringstream list(v);
      for (std::string item; std::getline(list, item, ',');) {
        char* end = nullptr;
        const float m = std::strtof(item.c_str(), &end);
        if (item.empty() || *end != '\0' || !std::isfinite(m) || !(std::fabs(m) < 1.f))
          usage_error("--margin-sweep wants margins in (-1, 1) as M1,M2,..., not '" + v + "'");
        o.margin_sweep.push_back(m);
      }
      if (o.margin_sweep.empty()) usage_error("--margin-sweep wants at least one margin");
    }
    else if (a == "--lambda-m") o.lambda_m = std::strtof(value().c_str(), nullptr);
    else if (a == "--seed") o.seed = static_cast<unsigned>(std::strtoul(value().c_str(), nullptr, 10));
    else if (a == "--bn") o.bn = true;
    else if (a == "--span") o.span = true;
    else if (a == "--arc-grad") {
      const std::string v = value();
      if (v != "exact" && v != "straight") usage_error("--arc-grad is exact or straight, not '" + v + "'");
      o.arc_straight = v == "straight";
    }
    else if (a == "--sphere-scale") {
      const std::string v = value();
      if (v != "norm" && v != "fixed") usage_error("--sphere-scale is norm or fixed, not '" + v + "'");
      o.sphere_fixed = v == "fixed";
    }
    else if (a == "--ads") o.ads = true;
    else if (a == "--held-out") {
      const std::string v = value();
      char tail = 0;
      int* h = o.held_out;
      bool ok = std::sscanf(v.c_str(), "%d,%d,%d%c", &h[0], &h[1], &h[2], &tail) == 3;
      for (int k = 0; k < 3; ++k) ok = ok && h[k] >= 0 && h[k] <= 9 && h[k] != h[(k + 1) % 3];
      if (!ok) usage_error("--held-out wants three different classes in 0..9 as A,B,C, not '" + v + "'");
    }
    else if (a == "--net") {
      const std::string v = value();
      if (v != "mlp" && v != "conv") usage_error("--net is mlp or conv, not '" + v + "'");
      o.conv = v == "conv";
    }
    else if (a == "--aug") o.aug = true;
    else if (a == "--no-aug") o.aug = false;
    else if (a == "--mining") o.mining = 1;
    else if (a == "--no-mining") o.mining = 0;
    else if (a == "--help" || a == "-h") usage(0);
    else usage_error("unknown option '" + a + "'");
  }
  if (o.epochs < 0) usage_error("--epochs must be >= 0");
  if (o.dim < 1) usage_error("--dim must be >= 1");
  if (!(o.dropout >= 0.f && o.dropout < 1.f)) usage_error("--dropout must be in [0, 1)");
  return o;
}

const char* const kLosses[10] = {"softmax",   "normface",       "cosface",   "arcface",    "sphereface",
                                 "mvsoftmax", "curricularface", "svsoftmax", "ammsoftmax", "adaptiveface"};
bool is_mining(const std::string& loss) {
  return loss == "mvsoftmax" || loss == "curricularface" || loss == "svsoftmax" || loss == "ammsoftmax" ||
         loss == "adaptiveface";
}

// Hyper-parameters (the same network, optimiser and schedule for every loss):
//   defaults s = 8 for every fixed-scale policy; CosFace m = 0.1; ArcFace m = 0.2 with the straight-through gradient;
//   SphereFace m = 4, scale = feature norm, lambda annealed 1000 -> 5 (official schedule);
//   MV-AM m = 0.1, t = 1.2; SV-Softmax m = 0, t = 1.2; CurricularFace m = 0.2; AMM m = 0.2, m_h = 0.1;
//   AdaptiveFace margins start at the CosFace margin, lambda_m = 1.
Trained train_loss(const std::string& loss, const Subset& data, int classes, const TrainConfig& cfg,
                   const Options& o, ml::LambdaSchedule& schedule) {
  if (loss == "softmax") return train(loss, SoftmaxHead{}, data, classes, cfg);
  if (loss == "normface") return train(loss, MarginHead<ml::NormFace<float>>{{}, {o.s}, {}, {}}, data, classes, cfg);
  if (loss == "cosface")
    return train(loss, MarginHead<ml::CosFace<float>>{{}, {o.s, o.cos_m}, {}, {}}, data, classes, cfg);
  if (loss == "arcface") {
    ml::ArcFace<float> policy{o.s, o.arc_m};
    if (o.arc_straight) policy.gradient = ml::Gradient::straight_through;
    return train(loss, MarginHead<ml::ArcFace<float>>{{}, policy, {}, {}}, data, classes, cfg);
  }
  if (loss == "sphereface") {
    schedule = ml::LambdaSchedule{};
    ml::SphereFace<float> policy{o.sphere_m, 1000.f};
    if (o.sphere_fixed) {
      policy.scale_mode = ml::Scale::fixed;
      policy.s = o.s;
    }
    MarginHead<ml::SphereFace<float>> head{{}, policy, {}, {}};
    head.on_step = [&schedule](ml::SphereFace<float>& p) { p.lambda = static_cast<float>(schedule.step()); };
    return train(loss, std::move(head), data, classes, cfg);
  }
  if (loss == "mvsoftmax") {  // MV-AM-Softmax, adaptive
    ml::MVSoftmax<float> p;
    p.s = o.s;
    p.m = o.cos_m;
    p.t = o.mv_t;
    return train(loss, MarginHead<ml::MVSoftmax<float>>{{}, p, {}, {}}, data, classes, cfg);
  }
  if (loss == "curricularface") {
    ml::CurricularFace<float> p;
    p.s = o.s;
    p.m = o.arc_m;
    return train(loss, MarginHead<ml::CurricularFace<float>>{{}, p, {}, {}}, data, classes, cfg);
  }
  if (loss == "svsoftmax") {  // SV-Softmax proper, m = 0 (with m > 0 it is MV-AM adaptive)
    ml::SVSoftmax<float> p;
    p.s = o.s;
    p.t = o.mv_t;
    return train(loss, MarginHead<ml::SVSoftmax<float>>{{}, p, {}, {}}, data, classes, cfg);
  }
  if (loss == "ammsoftmax") {
    ml::AMMSoftmax<float> p;
    p.s = o.s;
    p.m = o.arc_m;
    p.m_h = o.m_h;
    return train(loss, MarginHead<ml::AMMSoftmax<float>>{{}, p, {}, {}}, data, classes, cfg);
  }
  if (loss == "adaptiveface")
    return train(loss, AdaptiveHead(o.s, o.cos_m, o.lambda_m, classes), data, classes, cfg);
  throw std::runtime_error("unknown loss " + loss);
}

// --only takes one loss or a comma-separated list.
bool selected(const std::string& only, const std::string& loss) {
  return only.empty() || ("," + only + ",").find("," + loss + ",") != std::string::npos;
}

bool have_gnuplot() { return std::system("gnuplot --version > /dev/null 2>&1") == 0; }

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  std::copy_n(opt.held_out, 3, kHeldOut);
  for (std::stringstream list(opt.only); list.good();) {
    std::string name;
    std::getline(list, name, ',');
    if (!opt.only.empty() && std::find(std::begin(kLosses), std::end(kLosses), name) == std::end(kLosses))
      usage_error("--only: unknown loss '" + name + "'");
  }
  const auto t_start = std::chrono::steady_clock::now();
  {
    std::error_code ec;
    std::filesystem::create_directories(opt.out, ec);
    if (ec) {
      std::fprintf(stderr, "cannot create the output directory %s: %s\n", opt.out.c_str(), ec.message().c_str());
      return 1;
    }
  }

  Split train_split, test_split;
  {
    std::ifstream probe(opt.data + "/train-images-idx3-ubyte.gz");
    if (!probe) {
      std::fprintf(stderr,
                   "Fashion-MNIST not found in %s (install the Debian package dataset-fashion-mnist,\n"
                   "or pass --data DIR with the four *-idx?-ubyte.gz files): skipping.\n",
                   opt.data.c_str());
      return kSkip;
    }
  }
  try {
    train_split = load_split(opt.data, "train");
    test_split = load_split(opt.data, "t10k");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error reading Fashion-MNIST: %s\n", e.what());
    return 1;
  }

  // Training classes 0..9 minus the held-out ones, relabelled 0..6.
  int to_train[10], n_train_classes = 0;
  for (int c = 0; c < 10; ++c) to_train[c] = is_held_out(c) ? -1 : n_train_classes++;
  const auto seen = [](int c) { return !is_held_out(c); };
  const auto relabel = [&to_train](int c) { return to_train[c]; };
  const auto identity = [](int c) { return c; };
  const int train_limit = opt.quick ? 6000 : 1 << 30, eval_limit = opt.quick ? 600 : 1 << 30;

  const Subset train_set = select(train_split, seen, relabel, train_limit);
  const Subset closed_test = select(test_split, seen, relabel, opt.quick ? 1400 : 1 << 30);
  // Open-set evaluation: the held-out classes of the test split, or, with --validate, of the
  // training split (3000 images, never trained on), which is where hyper-parameters were chosen.
  const Subset open_set = opt.validate ? select(train_split, is_held_out, identity, opt.quick ? eval_limit : 3000)
                                       : select(test_split, is_held_out, identity, eval_limit);

  TrainConfig cfg;
  cfg.dim = opt.dim;
  cfg.lr = opt.lr;
  cfg.wd = opt.wd;
  cfg.dropout = opt.dropout;
  cfg.aug = opt.aug;
  cfg.conv = opt.conv;
  cfg.bn = opt.bn;
  cfg.ads = opt.ads;
  cfg.seed = opt.seed;
  cfg.epochs = opt.epochs > 0 ? opt.epochs : opt.quick ? 1 : opt.full ? 30 : 8;

  std::printf("Fashion-MNIST open set: train on %d classes (%ld images), hold out %s, %s, %s\n", n_train_classes,
              static_cast<long>(train_set.images.rows()), kClassNames[kHeldOut[0]], kClassNames[kHeldOut[1]],
              kClassNames[kHeldOut[2]]);
  std::printf("verification on %ld held-out %s images (%ld pairs), closed set on %ld test images\n",
              static_cast<long>(open_set.images.rows()), opt.validate ? "training-split" : "test-split",
              static_cast<long>(open_set.images.rows() * (open_set.images.rows() - 1) / 2),
              static_cast<long>(closed_test.images.rows()));
  std::printf("%s-%d%s, dropout %g, %s, SGD momentum %.1f, batch %d, lr %.3f (warm-up + cosine), wd %g, %d epochs, "
              "seed %u\n",
              cfg.conv ? "conv 5x5x8-pool-5x5x16-pool-256" : "MLP 784-256-ReLU", cfg.dim, cfg.bn ? "-BN" : "",
              static_cast<double>(cfg.dropout), cfg.aug ? "shift+flip augmentation" : "no augmentation",
              static_cast<double>(cfg.momentum), cfg.batch, static_cast<double>(cfg.lr), static_cast<double>(cfg.wd),
              cfg.epochs, cfg.seed);
  std::printf("NormFace s=%g | CosFace s=%g m=%g | ArcFace s=%g m=%g, %s gradient | SphereFace m=%d, %s, "
              "lambda 1000->5\n",
              double(opt.s), double(opt.s), double(opt.cos_m), double(opt.s), double(opt.arc_m),
              opt.arc_straight ? "straight-through" : "exact", opt.sphere_m,
              opt.sphere_fixed ? "fixed scale s" : "feature-norm scale");
  std::printf("MV-AM s=%g m=%g t=%g | CurricularFace s=%g m=%g | SV-Softmax s=%g m=0 t=%g | AMM s=%g m=%g m_h=%g\n"
              "AdaptiveFace s=%g margins from %g, lambda_m=%g, adaptive data sampling\n\n",
              double(opt.s), double(opt.cos_m), double(opt.mv_t), double(opt.s), double(opt.arc_m), double(opt.s),
              double(opt.mv_t), double(opt.s), double(opt.arc_m), double(opt.m_h), double(opt.s), double(opt.cos_m),
              double(opt.lambda_m));

  // Verification on the held-out classes and closed-set accuracy of one trained model.
  const auto evaluate = [&](const std::string& loss, Trained& t, std::chrono::steady_clock::time_point t0) {
    Row r;
    r.loss = loss;
    const Mat open_emb = t.net->embed(open_set.images);
    r.v = verify(open_emb, open_set.label);
    if (opt.span) print_span_diagnostic(loss.c_str(), open_emb, t.W, open_set.label);
    r.closed_acc = closed_set_accuracy(t.net->embed(closed_test.images), t.W, closed_test.label, loss != "softmax");
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  %-10s AUC %.4f  TAR@1e-2 %.4f  TAR@1e-3 %.4f  closed acc %.4f  (%.1fs)\n\n", loss.c_str(),
                r.v.auc, r.v.tar_1e2, r.v.tar_1e3, r.closed_acc, r.seconds);
    return r;
  };

  std::vector<Row> rows;
  ml::LambdaSchedule schedule;
  for (const char* loss : kLosses) {
    if (!selected(opt.only, loss)) continue;
    if (opt.only.empty() && is_mining(loss) && !(opt.mining == 1 || (opt.mining == -1 && !opt.quick))) continue;
    const auto t0 = std::chrono::steady_clock::now();
    Trained t = train_loss(loss, train_set, n_train_classes, cfg, opt, schedule);
    rows.push_back(evaluate(loss, t, t0));
  }
  if (rows.empty()) usage_error("no loss selected");

  // --margin-sweep: the additive cosine margin s (t - m) at each m, either sign, same network
  // and schedule.
  std::vector<Row> sweep;
  for (const float m : opt.margin_sweep) {
    char name[32];
    std::snprintf(name, sizeof name, "m=%+.3g", static_cast<double>(m));
    const auto t0 = std::chrono::steady_clock::now();
    Trained t = train(name, MarginHead<SignedCosineMargin>{{}, {opt.s, m}, {}, {}}, train_set, n_train_classes, cfg);
    sweep.push_back(evaluate(name, t, t0));
  }

  // The table.
  std::printf("%-14s %8s %10s %10s %10s %10s %11s\n", "loss", "ROC AUC", "TAR@1e-2", "TAR@1e-3", "intra deg",
              "inter deg", "closed acc");
  for (const Row& r : rows)
    std::printf("%-14s %8.4f %10.4f %10.4f %10.2f %10.2f %11.4f\n", r.loss.c_str(), r.v.auc, r.v.tar_1e2,
                r.v.tar_1e3, r.v.intra_deg, r.v.inter_deg, r.closed_acc);

  // JSON.
  const std::string json_path = opt.out + "/fashion_mnist_results.json";
  {
    std::ofstream js(json_path);
    if (!js) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
    char buf[512];
    js << "[\n";
    for (std::size_t k = 0; k < rows.size(); ++k) {
      const Row& r = rows[k];
      std::snprintf(buf, sizeof buf,
                    "  {\"loss\": \"%s\", \"roc_auc\": %.6f, \"tar_far_1e-2\": %.6f, \"tar_far_1e-3\": %.6f, "
                    "\"intra_angle_deg\": %.4f, \"inter_angle_deg\": %.4f, \"closed_set_acc\": %.6f}%s\n",
                    r.loss.c_str(), r.v.auc, r.v.tar_1e2, r.v.tar_1e3, r.v.intra_deg, r.v.inter_deg, r.closed_acc,
                    k + 1 < rows.size() ? "," : "");
      js << buf;
    }
    js << "]\n";
  }
  std::printf("\nwrote %s\n", json_path.c_str());

  const std::string sweep_dat = opt.out + "/fashion_mnist_margin_sweep.dat";
  const Row* softmax_row = nullptr;
  for (const Row& r : rows)
    if (r.loss == "softmax") softmax_row = &r;
  if (!sweep.empty()) {
    std::printf("\nadditive cosine margin sweep, s = %g (m = 0: NormFace, m > 0: CosFace):\n", double(opt.s));
    std::printf("%8s %8s %10s %10s %10s\n", "m", "ROC AUC", "TAR@1e-2", "TAR@1e-3", "closed acc");
    std::ofstream f(sweep_dat);
    f << "# m roc_auc tar_far_1e-2 tar_far_1e-3 closed_set_acc (softmax, same run: "
      << (softmax_row ? std::to_string(softmax_row->v.auc) + " " + std::to_string(softmax_row->v.tar_1e3)
                      : std::string("not run"))
      << ")\n";
    for (std::size_t k = 0; k < sweep.size(); ++k) {
      const Row& r = sweep[k];
      std::printf("%+8.3f %8.4f %10.4f %10.4f %10.4f\n", double(opt.margin_sweep[k]), r.v.auc, r.v.tar_1e2,
                  r.v.tar_1e3, r.closed_acc);
      f << opt.margin_sweep[k] << ' ' << r.v.auc << ' ' << r.v.tar_1e2 << ' ' << r.v.tar_1e3 << ' ' << r.closed_acc
        << '\n';
    }
    std::printf("wrote %s\n", sweep_dat.c_str());
  }

  // 2-D runs for the embedding figures: softmax and ArcFace (every loss with --full).
  struct TwoD {
    std::string loss, file;
  };
  std::vector<TwoD> two_d;
  if (opt.two_d && !opt.quick) {
    TrainConfig c2 = cfg;
    c2.dim = 2;
    c2.epochs = opt.full ? 15 : 3;
    c2.verbose = true;
    std::printf("\n2-D embeddings (%d epochs each)\n", c2.epochs);
    for (const char* loss : kLosses) {
      const std::string l = loss;
      if (!opt.full && l != "softmax" && l != "arcface") continue;
      if (!selected(opt.only, l)) continue;
      Trained t = train_loss(l, train_set, n_train_classes, c2, opt, schedule);
      // Test-split points of every class: the training classes and the held-out ones.
      const Subset all = select(test_split, [](int) { return true; }, identity, 1 << 30);
      const Mat emb = t.net->embed(all.images);
      const std::string file = opt.out + "/fashion_mnist_2d_" + l + ".dat";
      std::ofstream f(file);
      f << "# x y  (raw 2-D feature), u v (normalised), class, held_out\n";
      for (Eigen::Index i = 0; i < emb.rows(); ++i) {
        const double x = emb(i, 0), yv = emb(i, 1), r = std::hypot(x, yv);
        f << x << ' ' << yv << ' ' << x / r << ' ' << yv / r << ' ' << all.label(i) << ' '
          << (is_held_out(all.label(i)) ? 1 : 0) << '\n';
      }
      const Mat Wn = normalise_rows(t.W);
      std::ofstream fw(opt.out + "/fashion_mnist_2d_" + l + "_w.dat");
      for (Eigen::Index j = 0; j < Wn.rows(); ++j) fw << "0 0 " << Wn(j, 0) << ' ' << Wn(j, 1) << '\n';
      two_d.push_back({l, file});
    }
  }

  // Figures with gnuplot.
  if (opt.plots && !opt.quick) {
    const std::string roc_dat = opt.out + "/fashion_mnist_roc.dat";
    {
      std::ofstream f(roc_dat);
      f << "# FAR";
      for (const Row& r : rows) f << ' ' << r.loss;
      f << '\n';
      for (std::size_t k = 0; k < rows[0].v.far_grid.size(); ++k) {
        f << rows[0].v.far_grid[k];
        for (const Row& r : rows) f << ' ' << r.v.tar_grid[k];
        f << '\n';
      }
    }
    const std::string script = opt.out + "/fashion_mnist_plots.gp";
    {
      std::ofstream g(script);
      g << "set terminal pngcairo size 900,650 font 'sans,11'\n"
        << "set output '" << opt.out << "/fashion_mnist_roc.png'\n"
        << "set title 'Fashion-MNIST, held-out classes (" << kClassNames[kHeldOut[0]] << ", " << kClassNames[kHeldOut[1]]
        << ", " << kClassNames[kHeldOut[2]] << "): verification ROC'\n"
        << "set logscale x\nset format x '10^{%L}'\nset xrange [1e-6:1]\nset yrange [0:1]\n"
        << "set xlabel 'false accept rate'\nset ylabel 'true accept rate'\nset key top left\nset grid\n"
        << "plot ";
      for (std::size_t k = 0; k < rows.size(); ++k) {
        char auc[64];
        std::snprintf(auc, sizeof auc, " (AUC %.4f)", rows[k].v.auc);
        // Ten distinct colours; the mining and adaptive losses dashed.
        static const char* const palette[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
        g << (k ? ", " : "") << "'" << roc_dat << "' using 1:" << k + 2 << " with lines lw 2 lc rgb '"
          << palette[k % 10] << "' dt " << (is_mining(rows[k].loss) ? 2 : 1) << " title '" << rows[k].loss << auc
          << "'";
      }
      g << "\n";
      for (const TwoD& t : two_d) {
        // Normalised 2-D features on the unit circle, one ring per class (radius 1 + 0.07 k,
        // held-out classes outside), and the class-weight directions.
        const std::string colours = "word('#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f #bcbd22 #17becf', c+1)";
        std::string names = "word('";
        for (int c = 0; c < 10; ++c) {
          std::string name = kClassNames[c];
          std::replace(name.begin(), name.end(), ' ', '-');
          names += (c ? " " : "") + name + (is_held_out(c) ? "(held-out)" : "");
        }
        names += "', c+1)";
        g << "reset\nset terminal pngcairo size 1400,640 font 'sans,10'\n"
          << "set output '" << opt.out << "/fashion_mnist_2d_" << t.loss << ".png'\n"
          << "set multiplot layout 1,2 title '" << t.loss
          << ": 2-D embedding of the Fashion-MNIST test split (held-out classes: open circles)'\n"
          << "set size ratio -1\nset key outside right top\n"
          << "set title 'raw features'\n"
          << "plot for [c=0:9] '" << t.file << "' using ($5==c ? $1 : 1/0):2 with points pt (c==" << kHeldOut[0]
          << " || c==" << kHeldOut[1] << " || c==" << kHeldOut[2] << " ? 6 : 7) ps 0.35 lc rgb " << colours
          << " title " << names << "\n"
          << "set title 'normalised: one ring per class, radius 1 + 0.07 class; lines: class weights'\n"
          << "set xrange [-1.9:1.9]\nset yrange [-1.9:1.9]\nunset key\n"
          << "plot for [c=0:9] '" << t.file << "' using ($5==c ? $3*(1+0.07*c) : 1/0):($4*(1+0.07*c)) with points pt (c=="
          << kHeldOut[0] << " || c==" << kHeldOut[1] << " || c==" << kHeldOut[2] << " ? 6 : 7) ps 0.35 lc rgb "
          << colours << ", '" << opt.out << "/fashion_mnist_2d_" << t.loss
          << "_w.dat' using 1:2:3:4 with vectors lc 'black' lw 1.5\n"
          << "unset multiplot\n";
      }
      if (!sweep.empty()) {
        // Held-out AUC and TAR@FAR=1e-3 against the margin, softmax of the same run as a line.
        g << "reset\nset terminal pngcairo size 1200,480 font 'sans,11'\n"
          << "set output '" << opt.out << "/fashion_mnist_margin_sweep.png'\n"
          << "set multiplot layout 1,2 title 'held-out classes: additive cosine margin s(cos {/Symbol q} - m), s = "
          << opt.s << " (m = 0: NormFace, m > 0: CosFace)'\n"
          << "set xlabel 'margin m'\nset grid\nset key bottom left\n";
        const char* const metric[2][2] = {{"2", "ROC AUC"}, {"4", "TAR at FAR = 1e-3"}};
        for (int k = 0; k < 2; ++k) {
          g << "set title '" << metric[k][1] << "'\nset ylabel '" << metric[k][1] << "'\nplot '" << sweep_dat
            << "' using 1:" << metric[k][0] << " with linespoints lw 2 pt 7 lc rgb '#2ca02c' title 'cosine margin'";
          if (softmax_row)
            g << ", " << (k == 0 ? softmax_row->v.auc : softmax_row->v.tar_1e3)
              << " with lines lw 2 dt 2 lc rgb '#1f77b4' title 'softmax'";
          g << "\n";
        }
        g << "unset multiplot\n";
      }
    }
    if (!have_gnuplot()) {
      std::printf("gnuplot not found (Debian: apt-get install gnuplot-nox): figures skipped; data in %s\n",
                  roc_dat.c_str());
    } else if (std::system(("gnuplot '" + script + "'").c_str()) != 0) {
      std::printf("gnuplot failed on %s: figures skipped\n", script.c_str());
    } else {
      std::printf("figures: %s/fashion_mnist_roc.png", opt.out.c_str());
      for (const TwoD& t : two_d) std::printf(", %s/fashion_mnist_2d_%s.png", opt.out.c_str(), t.loss.c_str());
      if (!sweep.empty()) std::printf(", %s/fashion_mnist_margin_sweep.png", opt.out.c_str());
      std::printf("\n");
    }
  }
  std::printf("total %.1fs\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  return 0;
}
