// Open-set verification on Fashion-MNIST with each loss: a small embedding network (an MLP,
// 784 -> 256 -> ReLU -> D) is trained with manual backpropagation on 7 of the 10 classes; the
// 3 held-out classes (test split) are used only to measure verification by cosine similarity
// of the embeddings, as in the face-recognition papers (train on some identities, verify
// others).
//
//   ./fashion_mnist [--data DIR] [--out DIR] [--full] [--quick] [--epochs N] [--dim D]
//                   [--only LOSS] [--validate] [--no-2d] [--no-plots]
//
// Writes OUT/fashion_mnist_results.json and, when gnuplot is installed, the figures
// OUT/fashion_mnist_roc.png and OUT/fashion_mnist_2d_<loss>.png. See README.md next to this
// file for the protocol and the results.
#include <marginloss/marginloss.hpp>

#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
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
const int kHeldOut[3] = {2, 7, 8};

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
// The embedding network: x = relu(a W1 + b1) W2 + b2, trained by SGD with momentum.

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
};

struct Net {
  static constexpr int kIn = 784, kHidden = 256;
  Param W1, b1, W2, b2;
  // Per-batch activations, allocated once.
  Mat H, R, dR;

  Net(int dim, std::mt19937& rng)
      : W1(kIn, kHidden, true), b1(1, kHidden, false), W2(kHidden, dim, true), b2(1, dim, false) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const float s1 = std::sqrt(2.f / kIn), s2 = std::sqrt(1.f / kHidden);  // He / LeCun
    for (Eigen::Index k = 0; k < W1.value.size(); ++k) W1.value.data()[k] = s1 * normal(rng);
    for (Eigen::Index k = 0; k < W2.value.size(); ++k) W2.value.data()[k] = s2 * normal(rng);
  }
  // X (B x D) from A (B x 784); keeps what backward needs.
  template <typename In>
  void forward(const In& A, Mat& X) {
    H.resize(A.rows(), kHidden);
    R.resize(A.rows(), kHidden);
    H.noalias() = A * W1.value;
    H.rowwise() += b1.value.row(0);
    R = H.cwiseMax(0.f);
    X.noalias() = R * W2.value;
    X.rowwise() += b2.value.row(0);
  }
  template <typename In>
  void backward(const In& A, const Mat& dX) {
    W2.grad.noalias() = R.transpose() * dX;
    b2.grad = dX.colwise().sum();
    dR.resize(dX.rows(), kHidden);
    dR.noalias() = dX * W2.value.transpose();
    dR = (H.array() > 0.f).select(dR, 0.f);
    W1.grad.noalias() = A.transpose() * dR;
    b1.grad = dR.colwise().sum();
  }
  void step(float lr, float momentum, float wd) {
    for (Param* p : {&W1, &b1, &W2, &b2}) p->step(lr, momentum, wd);
  }
  // Embeddings of many inputs, in chunks.
  Mat embed(const Mat& A) {
    Mat out(A.rows(), W2.value.cols()), X;
    for (Eigen::Index first = 0; first < A.rows(); first += 1024) {
      const Eigen::Index n = std::min<Eigen::Index>(1024, A.rows() - first);
      X.resize(n, W2.value.cols());
      forward(A.middleRows(first, n), X);
      out.middleRows(first, n) = X;
    }
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// Losses. Each head owns the class weights W (C x D) and turns a batch of embeddings into the
// loss and dL/dX, dL/dW.

// Plain softmax cross-entropy of a bias-free linear classifier, logits = X W^T: the baseline.
struct SoftmaxHead {
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
  void before_step() {}
  static bool normalised() { return false; }
};

// Any marginloss policy; `on_step` runs before every step (SphereFace's lambda annealing).
template <typename Policy>
struct MarginHead {
  Policy policy;
  std::function<void(Policy&)> on_step;
  ml::Workspace<float> ws;
  float operator()(const Mat& X, const Mat& W, const Eigen::Ref<const Eigen::VectorXi>& y, Mat& dX, Mat& dW) {
    return ml::forward_backward(policy, X, W, y, dX, dW, ws);
  }
  void before_step() {
    if (on_step) on_step(policy);
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
  unsigned seed = 1;
  bool verbose = true;
};

struct Trained {
  Mat W;  // class weights (C x D)
  Net net;
};

template <typename Head>
Trained train(const std::string& name, Head head, const Subset& data, int classes, const TrainConfig& cfg) {
  std::mt19937 rng(cfg.seed);
  Net net(cfg.dim, rng);
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
  long step = 0;
  for (int epoch = 0; epoch < cfg.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = n - 1; i > 0; --i) std::swap(order[i], order[std::uniform_int_distribution<int>(0, i)(rng)]);
    double loss_sum = 0;
    long correct = 0;
    float lr = 0;
    for (int b = 0; b < steps_per_epoch; ++b, ++step) {
      for (int k = 0; k < B; ++k) {
        A.row(k) = data.images.row(order[b * B + k]);
        y(k) = data.label(order[b * B + k]);
      }
      const double warm = static_cast<double>(steps_per_epoch);
      lr = cfg.lr * static_cast<float>(step < warm ? (step + 1) / warm
                                                   : 0.5 * (1 + std::cos(kPi * (step - warm) / (total_steps - warm))));
      head.before_step();
      net.forward(A, X);
      loss_sum += head(X, W.value, y, dX, W.grad);
      net.backward(A, dX);
      // Training accuracy on the batch (argmax of X W^T; the same class as the cosine's
      // argmax up to the class-weight norms).
      logits.noalias() = X * W.value.transpose();
      for (int k = 0; k < B; ++k) {
        Eigen::Index arg;
        logits.row(k).maxCoeff(&arg);
        correct += (arg == y(k));
      }
      net.step(lr, cfg.momentum, cfg.wd);
      W.step(lr, cfg.momentum, cfg.wd);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (cfg.verbose)
      std::printf("  %-10s epoch %2d/%d  loss %7.4f  train acc %.4f  lr %.4f  |x| %.2f  %.1fs\n", name.c_str(),
                  epoch + 1, cfg.epochs, loss_sum / steps_per_epoch,
                  static_cast<double>(correct) / (static_cast<double>(steps_per_epoch) * B), lr,
                  X.rowwise().norm().mean(), secs);
    std::fflush(stdout);
  }
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
  int epochs = 0, dim = 32;
  // Hyper-parameters (see train_loss for their defaults).
  float s = 16.f, cos_m = 0.35f, arc_m = 0.5f, lr = 0.05f, wd = 5e-4f;
  int sphere_m = 4;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: fashion_mnist [--data DIR] [--out DIR] [--full] [--quick] [--epochs N] [--dim D]\n"
               "                     [--only LOSS] [--validate] [--no-2d] [--no-plots]\n"
               "  --data DIR   Fashion-MNIST IDX .gz files (default /usr/share/datasets/fashion-mnist)\n"
               "  --out DIR    where fashion_mnist_results.json and the figures go (default .)\n"
               "  --full       longer training (30 epochs instead of 8, 2-D runs of every loss)\n"
               "  --quick      smoke run: 6000 training and 600 held-out images, 1 epoch, no 2-D runs\n"
               "  --epochs N   epochs of the main runs\n"
               "  --dim D      embedding dimension of the main runs (default 32)\n"
               "  --only LOSS  one of softmax, normface, cosface, arcface, sphereface\n"
               "  --validate   report on the held-out classes' *training* split (never trained on)\n"
               "               instead of the test split: the split used to choose hyper-parameters\n"
               "  --no-2d      skip the 2-D runs;  --no-plots  skip gnuplot\n");
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
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
    else if (a == "--help" || a == "-h") usage(0);
    else usage(2);
  }
  if (o.epochs < 0 || o.dim < 1) usage(2);
  return o;
}

const char* const kLosses[5] = {"softmax", "normface", "cosface", "arcface", "sphereface"};

// Hyper-parameters (the same network, optimiser and schedule for every loss):
//   NormFace s = 16;  CosFace s = 16, m = 0.35;  ArcFace s = 16, m = 0.5;
//   SphereFace m = 4, scale = feature norm, lambda annealed 1000 -> 5 (official schedule).
Trained train_loss(const std::string& loss, const Subset& data, int classes, const TrainConfig& cfg,
                   const Options& o, ml::LambdaSchedule& schedule) {
  if (loss == "softmax") return train(loss, SoftmaxHead{}, data, classes, cfg);
  if (loss == "normface") return train(loss, MarginHead<ml::NormFace<float>>{{o.s}, {}, {}}, data, classes, cfg);
  if (loss == "cosface")
    return train(loss, MarginHead<ml::CosFace<float>>{{o.s, o.cos_m}, {}, {}}, data, classes, cfg);
  if (loss == "arcface") return train(loss, MarginHead<ml::ArcFace<float>>{{o.s, o.arc_m}, {}, {}}, data, classes, cfg);
  if (loss == "sphereface") {
    schedule = ml::LambdaSchedule{};
    MarginHead<ml::SphereFace<float>> head{{o.sphere_m, 1000.f}, {}, {}};
    head.on_step = [&schedule](ml::SphereFace<float>& p) { p.lambda = static_cast<float>(schedule.step()); };
    return train(loss, std::move(head), data, classes, cfg);
  }
  throw std::runtime_error("unknown loss " + loss);
}

bool have_gnuplot() { return std::system("gnuplot --version > /dev/null 2>&1") == 0; }

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const auto t_start = std::chrono::steady_clock::now();

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
  cfg.epochs = opt.epochs > 0 ? opt.epochs : opt.quick ? 1 : opt.full ? 30 : 8;

  std::printf("Fashion-MNIST open set: train on %d classes (%ld images), hold out %s, %s, %s\n", n_train_classes,
              static_cast<long>(train_set.images.rows()), kClassNames[kHeldOut[0]], kClassNames[kHeldOut[1]],
              kClassNames[kHeldOut[2]]);
  std::printf("verification on %ld held-out %s images (%ld pairs), closed set on %ld test images\n",
              static_cast<long>(open_set.images.rows()), opt.validate ? "training-split" : "test-split",
              static_cast<long>(open_set.images.rows() * (open_set.images.rows() - 1) / 2),
              static_cast<long>(closed_test.images.rows()));
  std::printf("MLP 784-256-ReLU-%d, SGD momentum %.1f, batch %d, lr %.3f (warm-up + cosine), wd %g, %d epochs\n",
              cfg.dim, static_cast<double>(cfg.momentum), cfg.batch, static_cast<double>(cfg.lr),
              static_cast<double>(cfg.wd), cfg.epochs);
  std::printf("NormFace s=%g | CosFace s=%g m=%g | ArcFace s=%g m=%g | SphereFace m=%d, feature-norm scale, "
              "lambda 1000->5\n\n",
              double(opt.s), double(opt.s), double(opt.cos_m), double(opt.s), double(opt.arc_m), opt.sphere_m);

  std::vector<Row> rows;
  ml::LambdaSchedule schedule;
  for (const char* loss : kLosses) {
    if (!opt.only.empty() && opt.only != loss) continue;
    const auto t0 = std::chrono::steady_clock::now();
    Trained t = train_loss(loss, train_set, n_train_classes, cfg, opt, schedule);
    Row r;
    r.loss = loss;
    r.v = verify(t.net.embed(open_set.images), open_set.label);
    r.closed_acc = closed_set_accuracy(t.net.embed(closed_test.images), t.W, closed_test.label,
                                       std::string(loss) != "softmax");
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  %-10s AUC %.4f  TAR@1e-2 %.4f  TAR@1e-3 %.4f  closed acc %.4f  (%.1fs)\n\n", loss, r.v.auc,
                r.v.tar_1e2, r.v.tar_1e3, r.closed_acc, r.seconds);
    rows.push_back(std::move(r));
  }
  if (rows.empty()) usage(2);

  // The table.
  std::printf("%-11s %8s %10s %10s %10s %10s %11s\n", "loss", "ROC AUC", "TAR@1e-2", "TAR@1e-3", "intra deg",
              "inter deg", "closed acc");
  for (const Row& r : rows)
    std::printf("%-11s %8.4f %10.4f %10.4f %10.2f %10.2f %11.4f\n", r.loss.c_str(), r.v.auc, r.v.tar_1e2,
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
      if (!opt.only.empty() && opt.only != l) continue;
      Trained t = train_loss(l, train_set, n_train_classes, c2, opt, schedule);
      // Test-split points of every class: the training classes and the held-out ones.
      const Subset all = select(test_split, [](int) { return true; }, identity, 1 << 30);
      const Mat emb = t.net.embed(all.images);
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
        << "set title 'Fashion-MNIST, held-out classes (Pullover, Sneaker, Bag): verification ROC'\n"
        << "set logscale x\nset format x '10^{%L}'\nset xrange [1e-6:1]\nset yrange [0:1]\n"
        << "set xlabel 'false accept rate'\nset ylabel 'true accept rate'\nset key bottom right\nset grid\n"
        << "plot ";
      for (std::size_t k = 0; k < rows.size(); ++k) {
        char auc[64];
        std::snprintf(auc, sizeof auc, " (AUC %.4f)", rows[k].v.auc);
        g << (k ? ", " : "") << "'" << roc_dat << "' using 1:" << k + 2 << " with lines lw 2 title '" << rows[k].loss
          << auc << "'";
      }
      g << "\n";
      for (const TwoD& t : two_d) {
        // Normalised 2-D features on the unit circle, one ring per class (radius 1 + 0.07 k,
        // held-out classes outside), and the class-weight directions.
        const std::string colours = "word('#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f #bcbd22 #17becf', c+1)";
        const std::string names = "word('T-shirt Trouser Pullover(held-out) Dress Coat Sandal Shirt Sneaker(held-out) "
                                  "Bag(held-out) Ankle-boot', c+1)";
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
    }
    if (!have_gnuplot()) {
      std::printf("gnuplot not found (Debian: apt-get install gnuplot-nox): figures skipped; data in %s\n",
                  roc_dat.c_str());
    } else if (std::system(("gnuplot '" + script + "'").c_str()) != 0) {
      std::printf("gnuplot failed on %s: figures skipped\n", script.c_str());
    } else {
      std::printf("figures: %s/fashion_mnist_roc.png", opt.out.c_str());
      for (const TwoD& t : two_d) std::printf(", %s/fashion_mnist_2d_%s.png", opt.out.c_str(), t.loss.c_str());
      std::printf("\n");
    }
  }
  std::printf("total %.1fs\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  return 0;
}
