#include "plots.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "losses.hpp"

namespace fashion_mnist {

namespace {
bool have_gnuplot() { return std::system("gnuplot --version > /dev/null 2>&1") == 0; }
}  // namespace

void write_2d_embedding(const std::string& file, const Mat& emb, const Eigen::VectorXi& label,
                        const HeldOut& held_out) {
  std::ofstream f(file);
  f << "# x y  (raw 2-D feature), u v (normalised), class, held_out\n";
  for (Eigen::Index i = 0; i < emb.rows(); ++i) {
    const double x = emb(i, 0), yv = emb(i, 1), r = std::hypot(x, yv);
    f << x << ' ' << yv << ' ' << x / r << ' ' << yv / r << ' ' << label(i) << ' '
      << (held_out.contains(label(i)) ? 1 : 0) << '\n';
  }
}

void write_class_directions(const std::string& file, const Mat& W) {
  const Mat Wn = normalise_rows(W);
  std::ofstream fw(file);
  for (Eigen::Index j = 0; j < Wn.rows(); ++j) fw << "0 0 " << Wn(j, 0) << ' ' << Wn(j, 1) << '\n';
}

void make_figures(const std::string& out, const std::vector<Row>& rows, const std::vector<TwoD>& two_d,
                  const std::vector<Row>& sweep, const std::string& sweep_dat, const Row* softmax, float s,
                  const HeldOut& held_out) {
  const std::string roc_dat = out + "/fashion_mnist_roc.dat";
  {
    std::ofstream f(roc_dat);
    f << "# FAR";
    for (const Row& r : rows) f << ' ' << r.loss;
    f << '\n';
    for (std::size_t k = 0; k < rows[0].open.v.far_grid.size(); ++k) {
      f << rows[0].open.v.far_grid[k];
      for (const Row& r : rows) f << ' ' << r.open.v.tar_grid[k];
      f << '\n';
    }
  }
  const std::string script = out + "/fashion_mnist_plots.gp";
  {
    std::ofstream g(script);
    g << "set terminal pngcairo size 900,650 font 'sans,11'\n"
      << "set output '" << out << "/fashion_mnist_roc.png'\n"
      << "set title 'Fashion-MNIST, held-out classes (" << kClassNames[held_out.classes[0]] << ", "
      << kClassNames[held_out.classes[1]] << ", " << kClassNames[held_out.classes[2]] << "): verification ROC'\n"
      << "set logscale x\nset format x '10^{%L}'\nset xrange [1e-6:1]\nset yrange [0:1]\n"
      << "set xlabel 'false accept rate'\nset ylabel 'true accept rate'\nset key top left\nset grid\n"
      << "plot ";
    for (std::size_t k = 0; k < rows.size(); ++k) {
      char auc[64];
      std::snprintf(auc, sizeof auc, " (AUC %.4f)", rows[k].open.v.auc);
      // Ten distinct colours; the mining and adaptive losses dashed.
      static const char* const palette[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                              "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
      g << (k ? ", " : "") << "'" << roc_dat << "' using 1:" << k + 2 << " with lines lw 2 lc rgb '" << palette[k % 10]
        << "' dt " << (is_mining(rows[k].loss) ? 2 : 1) << " title '" << rows[k].loss << auc << "'";
    }
    g << "\n";
    for (const TwoD& t : two_d) {
      // Normalised 2-D features on the unit circle, one ring per class (radius 1 + 0.07 k,
      // held-out classes outside), and the class-weight directions.
      const std::string colours =
          "word('#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f #bcbd22 #17becf', c+1)";
      std::string names = "word('";
      for (int c = 0; c < 10; ++c) {
        std::string name = kClassNames[c];
        std::replace(name.begin(), name.end(), ' ', '-');
        names += (c ? " " : "") + name + (held_out.contains(c) ? "(held-out)" : "");
      }
      names += "', c+1)";
      g << "reset\nset terminal pngcairo size 1400,640 font 'sans,10'\n"
        << "set output '" << out << "/fashion_mnist_2d_" << t.loss << ".png'\n"
        << "set multiplot layout 1,2 title '" << t.loss
        << ": 2-D embedding of the Fashion-MNIST test split (held-out classes: open circles)'\n"
        << "set size ratio -1\nset key outside right top\n"
        << "set title 'raw features'\n"
        << "plot for [c=0:9] '" << t.file << "' using ($5==c ? $1 : 1/0):2 with points pt (c==" << held_out.classes[0]
        << " || c==" << held_out.classes[1] << " || c==" << held_out.classes[2] << " ? 6 : 7) ps 0.35 lc rgb "
        << colours << " title " << names << "\n"
        << "set title 'normalised: one ring per class, radius 1 + 0.07 class; lines: class weights'\n"
        << "set xrange [-1.9:1.9]\nset yrange [-1.9:1.9]\nunset key\n"
        << "plot for [c=0:9] '" << t.file
        << "' using ($5==c ? $3*(1+0.07*c) : 1/0):($4*(1+0.07*c)) with points pt (c==" << held_out.classes[0]
        << " || c==" << held_out.classes[1] << " || c==" << held_out.classes[2] << " ? 6 : 7) ps 0.35 lc rgb "
        << colours << ", '" << out << "/fashion_mnist_2d_" << t.loss
        << "_w.dat' using 1:2:3:4 with vectors lc 'black' lw 1.5\n"
        << "unset multiplot\n";
    }
    if (!sweep.empty()) {
      // Held-out AUC and TAR@FAR=1e-3 against the margin, softmax of the same run as a line.
      g << "reset\nset terminal pngcairo size 1200,480 font 'sans,11'\n"
        << "set output '" << out << "/fashion_mnist_margin_sweep.png'\n"
        << "set multiplot layout 1,2 title 'held-out classes: additive cosine margin s(cos {/Symbol q} - m), s = " << s
        << " (m = 0: NormFace, m > 0: CosFace)'\n"
        << "set xlabel 'margin m'\nset grid\nset key bottom left\n";
      const char* const metric[2][2] = {{"2", "ROC AUC"}, {"4", "TAR at FAR = 1e-3"}};
      for (int k = 0; k < 2; ++k) {
        g << "set title '" << metric[k][1] << "'\nset ylabel '" << metric[k][1] << "'\nplot '" << sweep_dat
          << "' using 1:" << metric[k][0] << " with linespoints lw 2 pt 7 lc rgb '#2ca02c' title 'cosine margin'";
        if (softmax)
          g << ", " << (k == 0 ? softmax->open.v.auc : softmax->open.tar_1e3)
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
    std::printf("figures: %s/fashion_mnist_roc.png", out.c_str());
    for (const TwoD& t : two_d) std::printf(", %s/fashion_mnist_2d_%s.png", out.c_str(), t.loss.c_str());
    if (!sweep.empty()) std::printf(", %s/fashion_mnist_margin_sweep.png", out.c_str());
    std::printf("\n");
  }
}

}  // namespace fashion_mnist
