#include "network.hpp"

#include <algorithm>
#include <cmath>

namespace fashion_mnist {

Mat Net::embed(const Mat& A) {
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

namespace {

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

class MlpNet final : public Net {
 public:
  static constexpr int kHidden = 256;
  MlpNet(int dim, float dropout, bool bn, std::mt19937& rng)
      : W1(kIn, kHidden, true), b1(1, kHidden, false), W2(kHidden, dim, true), b2(1, dim, false), dropout_(dropout),
        bn_(bn) {
    W1.init_normal(rng, std::sqrt(2.f / kIn));     // He
    W2.init_normal(rng, std::sqrt(1.f / kHidden)); // LeCun
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
    K1.init_normal(rng, std::sqrt(2.f / (kK * kK)));
    K2.init_normal(rng, std::sqrt(2.f / (kK * kK * kC1)));
    W3.init_normal(rng, std::sqrt(2.f / (16 * kC2)));
    W4.init_normal(rng, std::sqrt(1.f / kHidden));
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

}  // namespace

std::unique_ptr<Net> make_net(bool conv, int dim, float dropout, bool bn, std::mt19937& rng) {
  if (conv) return std::make_unique<ConvNet>(dim, dropout, bn, rng);
  return std::make_unique<MlpNet>(dim, dropout, bn, rng);
}

}  // namespace fashion_mnist
