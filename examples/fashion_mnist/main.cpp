// Open-set verification on Fashion-MNIST with each loss: a small embedding network (an MLP,
// 784 -> 256 -> ReLU -> D, or with --net conv a small conv net) is trained with manual
// backpropagation on 7 of the 10 classes; the 3 held-out classes (test split) are used only to
// measure verification by cosine similarity of the embeddings, as in the face-recognition papers
// (train on some identities, verify others).
//
//   ./fashion_mnist [--data DIR] [--out DIR] [--full] [--quick] [--epochs N] [--dim D]
//                   [--only LIST] [--validate] [--no-2d] [--no-plots] [--help for more]
//
// Writes OUT/fashion_mnist_results.json and, when gnuplot is installed, the figures
// OUT/fashion_mnist_roc.png, OUT/fashion_mnist_2d_<loss>.png (and with --margin-sweep
// OUT/fashion_mnist_margin_sweep.png). See README.md next to this file for the protocol and the
// results.
//
// The parts, one file each: data (IDX files, held-out split), augment, network (MLP, conv net),
// heads (the losses' heads), train (the training loop), losses (loss names and hyper-parameters),
// evaluate (verification, closed-set accuracy), report (table, JSON, margin sweep), plots
// (gnuplot), options (the command line); this file runs them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "data.hpp"
#include "evaluate.hpp"
#include "losses.hpp"
#include "options.hpp"
#include "plots.hpp"
#include "report.hpp"
#include "train.hpp"

using namespace fashion_mnist;

namespace {
constexpr int kSkip = 77;  // CTest's skip code (dataset not installed)
}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const HeldOut& held_out = opt.held_out;
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
  for (int c = 0; c < 10; ++c) to_train[c] = held_out.contains(c) ? -1 : n_train_classes++;
  const auto seen = [&held_out](int c) { return !held_out.contains(c); };
  const auto unseen = [&held_out](int c) { return held_out.contains(c); };
  const auto relabel = [&to_train](int c) { return to_train[c]; };
  const auto identity = [](int c) { return c; };
  const int train_limit = opt.quick ? 6000 : 1 << 30, eval_limit = opt.quick ? 600 : 1 << 30;

  const Subset train_set = select(train_split, seen, relabel, train_limit);
  const Subset closed_test = select(test_split, seen, relabel, opt.quick ? 1400 : 1 << 30);
  // Open-set evaluation: the held-out classes of the test split, or, with --validate, of the
  // training split (3000 images, never trained on), which is where hyper-parameters were chosen.
  const Subset open_set = opt.validate ? select(train_split, unseen, identity, opt.quick ? eval_limit : 3000)
                                       : select(test_split, unseen, identity, eval_limit);

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
              static_cast<long>(train_set.images.rows()), kClassNames[held_out.classes[0]],
              kClassNames[held_out.classes[1]], kClassNames[held_out.classes[2]]);
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
  const LossParams& lp = opt.loss;
  std::printf("NormFace s=%g | CosFace s=%g m=%g | ArcFace s=%g m=%g, %s gradient | SphereFace m=%d, %s, "
              "lambda 1000->5\n",
              double(lp.s), double(lp.s), double(lp.cos_m), double(lp.s), double(lp.arc_m),
              lp.arc_straight ? "straight-through" : "exact", lp.sphere_m,
              lp.sphere_fixed ? "fixed scale s" : "feature-norm scale");
  std::printf("MV-AM s=%g m=%g t=%g | CurricularFace s=%g m=%g | SV-Softmax s=%g m=0 t=%g | AMM s=%g m=%g m_h=%g\n"
              "AdaptiveFace s=%g margins from %g, lambda_m=%g, adaptive data sampling\n\n",
              double(lp.s), double(lp.cos_m), double(lp.mv_t), double(lp.s), double(lp.arc_m), double(lp.s),
              double(lp.mv_t), double(lp.s), double(lp.arc_m), double(lp.m_h), double(lp.s), double(lp.cos_m),
              double(lp.lambda_m));

  std::vector<Row> rows;
  for (const char* loss : kLosses) {
    if (!selected(opt.only, loss)) continue;
    if (opt.only.empty() && is_mining(loss) && !(opt.mining == 1 || (opt.mining == -1 && !opt.quick))) continue;
    const auto t0 = std::chrono::steady_clock::now();
    Trained t = train_loss(loss, train_set, n_train_classes, cfg, lp);
    rows.push_back(evaluate(loss, t, t0, open_set, closed_test, opt.span));
  }
  if (rows.empty()) usage_error("no loss selected");

  // --margin-sweep: the additive cosine margin s (t - m) at each m, either sign, same network
  // and schedule.
  std::vector<Row> sweep;
  for (const float m : opt.margin_sweep) {
    char name[32];
    std::snprintf(name, sizeof name, "m=%+.3g", static_cast<double>(m));
    const auto t0 = std::chrono::steady_clock::now();
    Trained t = train_signed_margin(name, lp.s, m, train_set, n_train_classes, cfg);
    sweep.push_back(evaluate(name, t, t0, open_set, closed_test, opt.span));
  }

  // The table.
  print_table(rows);

  // JSON.
  const std::string json_path = opt.out + "/fashion_mnist_results.json";
  if (!write_json(json_path, rows)) {
    std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
    return 1;
  }
  std::printf("\nwrote %s\n", json_path.c_str());

  const std::string sweep_dat = opt.out + "/fashion_mnist_margin_sweep.dat";
  const Row* softmax_row = nullptr;
  for (const Row& r : rows)
    if (r.loss == "softmax") softmax_row = &r;
  if (!sweep.empty()) report_margin_sweep(sweep_dat, lp.s, opt.margin_sweep, sweep, softmax_row);

  // 2-D runs for the embedding figures: softmax and ArcFace (every loss with --full).
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
      Trained t = train_loss(l, train_set, n_train_classes, c2, lp);
      // Test-split points of every class: the training classes and the held-out ones.
      const Subset all = select(test_split, [](int) { return true; }, identity, 1 << 30);
      const Mat emb = t.net->embed(all.images);
      const std::string file = opt.out + "/fashion_mnist_2d_" + l + ".dat";
      write_2d_embedding(file, emb, all.label, held_out);
      write_class_directions(opt.out + "/fashion_mnist_2d_" + l + "_w.dat", t.W);
      two_d.push_back({l, file});
    }
  }

  // Figures with gnuplot.
  if (opt.plots && !opt.quick)
    make_figures(opt.out, rows, two_d, sweep, sweep_dat, softmax_row, lp.s, held_out);
  std::printf("total %.1fs\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  return 0;
}
