// Figures of the glyph demo, drawn by gnuplot (Debian gnuplot-nox) from data files written
// next to them; without gnuplot the data files stay and a line says so.
#pragma once
#include <string>
#include <vector>

#include "dataset.hpp"
#include "evaluate.hpp"

namespace glyphs {

struct LossResult {
  std::string loss;
  OpenSet held_out;
  double closed_acc = 0;
  double train_seconds = 0;
};

struct SeedResults {
  unsigned seed = 0;
  std::vector<LossResult> rows;
};

bool have_gnuplot();

// OUT/glyphs_roc.png: the held-out ROC (log-FAR axis) of every loss of one run.
bool plot_roc(const std::string& out, const std::vector<LossResult>& rows, const std::string& title);
// OUT/glyphs_samples.png: characters (rows) in training styles (left) and held-out styles (right).
bool plot_samples(const std::string& out, const GlyphSet& g, const std::vector<int>& chars,
                  const std::vector<int>& train_styles, const std::vector<int>& held_out_styles);
// OUT/glyphs_tar_seeds.png: TAR@FAR=1e-4 (and 1e-3) per loss, mean with min-max over the seeds.
bool plot_tar_seeds(const std::string& out, const std::vector<SeedResults>& runs);

}  // namespace glyphs
