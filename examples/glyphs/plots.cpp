#include "plots.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace glyphs {
namespace {

const char* const kPalette[11] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000"};

bool run_gnuplot(const std::string& script) {
  if (!have_gnuplot()) {
    std::printf("gnuplot not found (Debian: apt-get install gnuplot-nox): %s not drawn\n", script.c_str());
    return false;
  }
  if (std::system(("gnuplot '" + script + "'").c_str()) != 0) {
    std::printf("gnuplot failed on %s\n", script.c_str());
    return false;
  }
  return true;
}

bool is_default(const std::string& loss) {
  return loss == "softmax" || loss == "normface" || loss == "cosface" || loss == "arcface" || loss == "sphereface";
}

}  // namespace

bool have_gnuplot() { return std::system("gnuplot --version > /dev/null 2>&1") == 0; }

bool plot_roc(const std::string& out, const std::vector<LossResult>& rows, const std::string& title) {
  if (rows.empty()) return false;
  const std::string dat = out + "/glyphs_roc.dat", gp = out + "/glyphs_roc.gp";
  {
    std::ofstream f(dat);
    f << "# FAR";
    for (const auto& r : rows) f << ' ' << r.loss;
    f << '\n';
    for (std::size_t k = 0; k < rows[0].held_out.v.far_grid.size(); ++k) {
      f << rows[0].held_out.v.far_grid[k];
      for (const auto& r : rows) f << ' ' << r.held_out.v.tar_grid[k];
      f << '\n';
    }
  }
  std::ofstream g(gp);
  g << "set terminal pngcairo size 900,650 font 'sans,11'\nset output '" << out << "/glyphs_roc.png'\n"
    << "set title '" << title << "'\nset logscale x\nset format x '10^{%L}'\nset xrange [1e-6:1]\nset yrange [0:1]\n"
    << "set xlabel 'false accept rate'\nset ylabel 'true accept rate'\nset key bottom right noenhanced\nset grid\nplot ";
  for (std::size_t k = 0; k < rows.size(); ++k) {
    char label[128];
    std::snprintf(label, sizeof label, "%s (AUC %.4f, TAR@1e-4 %.3f)", rows[k].loss.c_str(), rows[k].held_out.v.auc,
                  rows[k].held_out.tar_1e4);
    g << (k ? ", " : "") << "'" << dat << "' using 1:" << k + 2 << " with lines lw 2 lc rgb '" << kPalette[k % 11]
      << "' dt " << (is_default(rows[k].loss) ? 1 : 2) << " title '" << label << "'";
  }
  g << "\n";
  g.close();
  return run_gnuplot(gp);
}

bool plot_samples(const std::string& out, const GlyphSet& g, const std::vector<int>& chars,
                  const std::vector<int>& train_styles, const std::vector<int>& held_out_styles) {
  const int n = g.size, per_side = 10, gap = 1;
  auto pick = [&](const std::vector<int>& v) {  // evenly spaced styles
    std::vector<int> out_v;
    for (int k = 0; k < std::min<int>(per_side, static_cast<int>(v.size())); ++k)
      out_v.push_back(v[static_cast<std::size_t>(k) * v.size() / static_cast<std::size_t>(std::min<int>(per_side, static_cast<int>(v.size())))]);
    return out_v;
  };
  const std::vector<int> left = pick(train_styles), right = pick(held_out_styles);
  const int cols = static_cast<int>(left.size() + right.size()) + gap, rows = static_cast<int>(chars.size());
  const std::string dat = out + "/glyphs_samples.dat", gp = out + "/glyphs_samples.gp";
  {
    std::ofstream f(dat);
    for (int r = 0; r < rows * n; ++r) {
      for (int c = 0; c < cols * n; ++c) {
        const int cell = c / n;
        int style = -1;
        if (cell < static_cast<int>(left.size())) style = left[static_cast<std::size_t>(cell)];
        else if (cell >= static_cast<int>(left.size()) + gap) style = right[static_cast<std::size_t>(cell - static_cast<int>(left.size()) - gap)];
        const int v = style < 0 ? 128 : 255 - g.image(style, chars[static_cast<std::size_t>(r / n)])[(r % n) * n + c % n];
        f << v << (c + 1 < cols * n ? ' ' : '\n');
      }
    }
  }
  // Exactly 3 screen pixels per glyph pixel (no resampling moire): the plot area is the image.
  const int W = cols * n * 3, H_img = rows * n * 3, H = H_img + 36;
  std::ofstream s(gp);
  s << "set terminal pngcairo size " << W << "," << H << " font 'sans,11'\n"
    << "set output '" << out << "/glyphs_samples.png'\nunset key\nunset colorbox\nunset tics\nunset border\n"
    << "set palette grey\nset cbrange [0:255]\n"
    << "set xrange [-0.5:" << cols * n - 0.5 << "]\nset yrange [" << rows * n - 0.5 << ":-0.5]\n"
    << "set lmargin at screen 0\nset rmargin at screen 1\nset bmargin at screen 0\nset tmargin at screen "
    << static_cast<double>(H_img) / H << "\n"
    << "set label 'held-out characters in " << left.size() << " training styles (left) and " << right.size()
    << " held-out styles (right)' at screen 0.5, screen " << 1.0 - 18.0 / H << " center noenhanced\n"
    << "plot '" << dat << "' matrix with image pixels\n";
  s.close();
  return run_gnuplot(gp);
}

bool plot_tar_seeds(const std::string& out, const std::vector<SeedResults>& runs) {
  if (runs.empty() || runs[0].rows.empty()) return false;
  const std::string dat = out + "/glyphs_tar_seeds.dat", gp = out + "/glyphs_tar_seeds.gp";
  {
    std::ofstream f(dat);
    f << "# index loss mean1e-4 min max mean1e-3 min max (over " << runs.size() << " seeds)\n";
    for (std::size_t k = 0; k < runs[0].rows.size(); ++k) {
      double m4 = 0, lo4 = 1, hi4 = 0, m3 = 0, lo3 = 1, hi3 = 0;
      for (const auto& r : runs) {
        const double a = r.rows[k].held_out.tar_1e4, b = r.rows[k].held_out.tar_1e3;
        m4 += a / static_cast<double>(runs.size());
        m3 += b / static_cast<double>(runs.size());
        lo4 = std::min(lo4, a), hi4 = std::max(hi4, a), lo3 = std::min(lo3, b), hi3 = std::max(hi3, b);
      }
      f << k << ' ' << runs[0].rows[k].loss << ' ' << m4 << ' ' << lo4 << ' ' << hi4 << ' ' << m3 << ' ' << lo3 << ' '
        << hi3 << '\n';
    }
  }
  std::string seeds;
  for (const auto& r : runs) seeds += (seeds.empty() ? "" : ", ") + std::to_string(r.seed);
  std::ofstream g(gp);
  g << "set terminal pngcairo size 900,500 font 'sans,11'\nset output '" << out << "/glyphs_tar_seeds.png'\n"
    << "set title 'held-out characters and families: TAR at FAR 1e-4, 1e-3 (seeds " << seeds
    << "; mean, min-max)' noenhanced\n"
    << "set style data histogram\nset style histogram errorbars gap 2 lw 1.5\nset style fill solid 0.7 border -1\n"
    << "set yrange [0:1]\nset ylabel 'true accept rate'\nset grid ytics\nset key top left noenhanced\nset xtics rotate by -30\n"
    << "plot '" << dat << "' using 3:4:5:xtic(2) title 'TAR @ FAR=1e-4' lc rgb '#d62728', '' using 6:7:8 title "
    << "'TAR @ FAR=1e-3' lc rgb '#1f77b4'\n";
  g.close();
  return run_gnuplot(gp);
}

}  // namespace glyphs
