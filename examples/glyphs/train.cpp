#include "train.hpp"

#include <marginloss/sampling/adaptive_sampler.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "../common/batches.hpp"

namespace glyphs {

ImageList make_images(const std::vector<int>& styles, const std::vector<int>& chars) {
  ImageList l;
  for (int s : styles)
    for (std::size_t k = 0; k < chars.size(); ++k) {
      l.style.push_back(s);
      l.ch.push_back(chars[k]);
      l.label.push_back(static_cast<int>(k));
    }
  return l;
}

Mat inputs(const GlyphSet& g, const ImageList& list, const Standardise& st) {
  Mat A(list.size(), g.size * g.size);
  for (int i = 0; i < list.size(); ++i)
    to_input(g.image(list.style[static_cast<std::size_t>(i)], list.ch[static_cast<std::size_t>(i)]), g.size, st, A.row(i));
  return A;
}

Standardise standardise_of(const GlyphSet& g, const ImageList& list) {
  double sum = 0, sq = 0, n = 0;
  for (int i = 0; i < list.size(); i += 7) {
    const std::uint8_t* p = g.image(list.style[static_cast<std::size_t>(i)], list.ch[static_cast<std::size_t>(i)]);
    for (int k = 0; k < g.size * g.size; ++k) {
      const double v = p[k] / 255.0;
      sum += v;
      sq += v * v;
      n += 1;
    }
  }
  Standardise st;
  if (n > 0) {
    const double mean = sum / n, var = std::max(1e-6, sq / n - mean * mean);
    st.mean = static_cast<float>(mean);
    st.inv_std = static_cast<float>(1.0 / std::sqrt(var));
  }
  return st;
}

Trained train(const std::string& name, std::unique_ptr<Head> head, const GlyphSet& g, const ImageList& data,
              int num_classes, const Standardise& st, const TrainConfig& cfg) {
  constexpr double kPi = 3.14159265358979323846;
  const auto t_start = std::chrono::steady_clock::now();
  std::mt19937 rng(cfg.seed);
  Trained t;
  t.net = std::make_unique<Mlp>(g.size * g.size, cfg.hidden, cfg.dim, rng);
  Param W(num_classes, cfg.dim, true);
  W.init_normal(rng, std::sqrt(1.f / static_cast<float>(cfg.dim)));

  const int n = data.size(), B = std::min(cfg.batch, n), steps_per_epoch = std::max(1, n / B);
  const long total = static_cast<long>(steps_per_epoch) * cfg.epochs;
  const long warm = std::max(1L, total / 10);
  std::vector<int> order(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  Mat A(B, g.size * g.size), X(B, cfg.dim), dX(B, cfg.dim);
  Eigen::VectorXi y(B);
  marginloss::IndexVector batch(B);
  Eigen::Matrix<bool, Eigen::Dynamic, 1> correct(B);
  Augmenter augment(g.size);
  // Adaptive Data Sampling (AdaptiveFace): batches drawn by per-sample weights, raised for the
  // samples the classifier got wrong in their last batch and lowered for the right ones.
  std::optional<marginloss::AdaptiveSampler> ads;
  if (head->adaptive_sampling()) ads.emplace(n, cfg.seed);
  long step = 0;
  for (int epoch = 0; epoch < cfg.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0;
    long hits = 0;
    float lr = 0;
    for (int b = 0; b < steps_per_epoch; ++b, ++step) {
      marginloss_examples::select_batch(ads, order, b, B, batch);
      for (int k = 0; k < B; ++k) {
        const auto i = static_cast<std::size_t>(batch(k));
        const std::uint8_t* img = g.image(data.style[i], data.ch[i]);
        if (cfg.augment)
          augment(img, st, rng, A.row(k));
        else
          to_input(img, g.size, st, A.row(k));
        y(k) = data.label[i];
      }
      lr = cfg.lr * static_cast<float>(step < warm ? static_cast<double>(step + 1) / static_cast<double>(warm)
                                                   : 0.5 * (1 + std::cos(kPi * static_cast<double>(step - warm) /
                                                                        static_cast<double>(total - warm))));
      t.net->forward(A, X);
      loss_sum += head->forward_backward(X, W.value, y, dX, W.grad);
      t.net->backward(A, dX);
      const Mat s = head->scores(X, W.value);
      for (int k = 0; k < B; ++k) {
        Eigen::Index arg;
        s.row(k).maxCoeff(&arg);
        correct(k) = arg == y(k);
      }
      hits += correct.count();
      t.net->step(lr, cfg.momentum, cfg.wd);
      W.step(lr, cfg.momentum, cfg.wd);
      head->after_step(lr, cfg.momentum);
      if (ads) ads->update(batch, correct);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (cfg.verbose) {
      std::printf("  %-14s epoch %d/%d  loss %7.4f  train acc %.4f  lr %.4f  |x| %.2f  %.1fs\n", name.c_str(),
                  epoch + 1, cfg.epochs, loss_sum / steps_per_epoch,
                  static_cast<double>(hits) / (static_cast<double>(steps_per_epoch) * B), static_cast<double>(lr),
                  static_cast<double>(X.rowwise().norm().mean()), secs);
      std::fflush(stdout);
    }
  }
  if (cfg.verbose && !head->summary().empty()) std::printf("  %-14s %s\n", name.c_str(), head->summary().c_str());
  t.W = W.value;
  t.head = std::move(head);
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return t;
}

}  // namespace glyphs
