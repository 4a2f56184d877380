// Figures with gnuplot: the ROC curves of every loss (fashion_mnist_roc.png), the 2-D embeddings
// (fashion_mnist_2d_<loss>.png) and the margin sweep (fashion_mnist_margin_sweep.png), from data
// files written next to them.
#pragma once
#include <string>
#include <vector>

#include "data.hpp"
#include "evaluate.hpp"
#include "types.hpp"

namespace fashion_mnist {

// A 2-D run's data file (write_2d_embedding) and the loss it trained.
struct TwoD {
  std::string loss, file;
};

// One line per row of `emb` (N x 2): raw feature, normalised feature, class, held out (0/1).
void write_2d_embedding(const std::string& file, const Mat& emb, const Eigen::VectorXi& label, const HeldOut& held_out);

// The class-weight directions (W normalised, C x 2) as gnuplot vectors from the origin.
void write_class_directions(const std::string& file, const Mat& W);

// Writes OUT/fashion_mnist_roc.dat and OUT/fashion_mnist_plots.gp and runs gnuplot on it (when
// installed), saying which figures it wrote. `sweep_dat`: report_margin_sweep's file, used when
// `sweep` is not empty; `softmax`: softmax's row of the same run, or null.
void make_figures(const std::string& out, const std::vector<Row>& rows, const std::vector<TwoD>& two_d,
                  const std::vector<Row>& sweep, const std::string& sweep_dat, const Row* softmax, float s,
                  const HeldOut& held_out);

}  // namespace fashion_mnist
