#include "options.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace fashion_mnist {

namespace {

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

}  // namespace

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
    else if (a == "--s") o.loss.s = std::strtof(value().c_str(), nullptr);
    else if (a == "--cos-m") o.loss.cos_m = std::strtof(value().c_str(), nullptr);
    else if (a == "--arc-m") o.loss.arc_m = std::strtof(value().c_str(), nullptr);
    else if (a == "--sphere-m") o.loss.sphere_m = std::atoi(value().c_str());
    else if (a == "--lr") o.lr = std::strtof(value().c_str(), nullptr);
    else if (a == "--wd") o.wd = std::strtof(value().c_str(), nullptr);
    else if (a == "--dropout") o.dropout = std::strtof(value().c_str(), nullptr);
    else if (a == "--mv-t") o.loss.mv_t = std::strtof(value().c_str(), nullptr);
    else if (a == "--m-h") o.loss.m_h = std::strtof(value().c_str(), nullptr);
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
    else if (a == "--lambda-m") o.loss.lambda_m = std::strtof(value().c_str(), nullptr);
    else if (a == "--seed") o.seed = static_cast<unsigned>(std::strtoul(value().c_str(), nullptr, 10));
    else if (a == "--bn") o.bn = true;
    else if (a == "--span") o.span = true;
    else if (a == "--arc-grad") {
      const std::string v = value();
      if (v != "exact" && v != "straight") usage_error("--arc-grad is exact or straight, not '" + v + "'");
      o.loss.arc_straight = v == "straight";
    }
    else if (a == "--sphere-scale") {
      const std::string v = value();
      if (v != "norm" && v != "fixed") usage_error("--sphere-scale is norm or fixed, not '" + v + "'");
      o.loss.sphere_fixed = v == "fixed";
    }
    else if (a == "--ads") o.ads = true;
    else if (a == "--held-out") {
      const std::string v = value();
      char tail = 0;
      int* h = o.held_out.classes.data();
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

bool selected(const std::string& only, const std::string& loss) {
  return only.empty() || ("," + only + ",").find("," + loss + ",") != std::string::npos;
}

}  // namespace fashion_mnist
