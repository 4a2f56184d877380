#include "train.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <marginloss/sampling/adaptive_sampler.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "../common/batches.hpp"
#include "augment.hpp"
#include "heads.hpp"

namespace fashion_mnist {

namespace {
using BoolVector = Eigen::Matrix<bool, Eigen::Dynamic, 1>;
}  // namespace

template <typename Head>
Trained train(const std::string& name, Head head, const Subset& data, int classes, const TrainConfig& cfg) {
  std::mt19937 rng(cfg.seed);
  std::unique_ptr<Net> net = make_net(cfg.conv, cfg.dim, cfg.dropout, cfg.bn, rng);
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
      marginloss_examples::select_batch(ads, order, b, B, batch);
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
                  static_cast<double>(hits) / (static_cast<double>(steps_per_epoch) * B), lr, X.rowwise().norm().mean(),
                  secs);
    std::fflush(stdout);
  }
  if (cfg.verbose && !head.summary().empty()) std::printf("  %-10s %s\n", name.c_str(), head.summary().c_str());
  return Trained{W.value, std::move(net)};
}

// The heads the demo trains with (losses.cpp).
template Trained train(const std::string&, SoftmaxHead, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, MarginHead<ml::NormFace<float>>, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, MarginHead<ml::CosFace<float>>, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, MarginHead<ml::ArcFace<float>>, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, MarginHead<ml::SphereFace<float>>, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, MarginHead<ml::MVSoftmax<float>>, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, MarginHead<ml::CurricularFace<float>>, const Subset&, int,
                       const TrainConfig&);
template Trained train(const std::string&, MarginHead<ml::SVSoftmax<float>>, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, MarginHead<ml::AMMSoftmax<float>>, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, MarginHead<SignedCosineMargin>, const Subset&, int, const TrainConfig&);
template Trained train(const std::string&, AdaptiveHead, const Subset&, int, const TrainConfig&);

}  // namespace fashion_mnist
