// The command line of the demo (--help lists it).
#pragma once
#include <string>
#include <vector>

#include "data.hpp"
#include "losses.hpp"

namespace fashion_mnist {

struct Options {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string out = ".";
  std::string only;
  bool full = false, quick = false, validate = false, two_d = true, plots = true;
  int epochs = 0, dim = 128;
  // Chosen with --validate (README.md): a small scale and small margins (LossParams' defaults),
  // a 128-d embedding, dropout 0.3 and augmentation, the setting in which the margin losses came
  // closest to softmax.
  LossParams loss;
  float lr = 0.05f, wd = 5e-4f, dropout = 0.3f;
  std::vector<float> margin_sweep;  // --margin-sweep: additive cosine margins, either sign
  bool span = false;
  bool conv = false, aug = true, bn = false, ads = false;
  int mining = -1;  // -1: default (on, off with --quick)
  unsigned seed = 1;
  HeldOut held_out;
};

// Exits with the usage on --help (0) and on a usage error (2, with the reason).
Options parse(int argc, char** argv);

[[noreturn]] void usage_error(const std::string& what);

// --only takes one loss or a comma-separated list; empty: every loss.
bool selected(const std::string& only, const std::string& loss);

}  // namespace fashion_mnist
