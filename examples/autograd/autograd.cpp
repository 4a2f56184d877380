// A minimal tape-based reverse-mode autograd with a marginloss node.
//
// The tape records a few operations (matmul, add bias, relu, scale, add, sum of squares) and a
// "margin loss" node whose forward calls ml::forward(policy, X, W, labels, ws), keeping the
// context it returns, and whose backward calls ml::backward(fwd, grad_loss, {dX, dW}) with the
// upstream gradient.
// The program
//   1. checks the tape's gradients of every parameter against central finite differences in
//      double through the whole tape (MLP -> margin loss, plus a weighted weight-decay term, so
//      the loss node receives an upstream gradient other than 1), for each policy;
//   2. trains a small network end to end on synthetic data and prints the loss falling.
// It exits non-zero if a gradient check fails or the loss does not fall (a CTest test).
//
//   ./autograd [--check-only]
#include <marginloss/marginloss.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace ml = marginloss;
using Mat = ml::RowMatrix<double>;

// ---------------------------------------------------------------------------------------------
// The tape.

class Tape {
 public:
  struct Var {
    int id = -1;
  };

  // A leaf: a parameter (requires_grad) or a constant input.
  Var leaf(Mat value, bool requires_grad) { return push(std::move(value), requires_grad, nullptr); }

  // a (n x k) * b (k x m)
  Var matmul(Var a, Var b) {
    Mat v = val(a) * val(b);
    return push(std::move(v), needs(a) || needs(b), [a, b](Tape& t, const Mat& g) {
      if (t.needs(a)) t.accumulate(a, g * t.val(b).transpose());
      if (t.needs(b)) t.accumulate(b, t.val(a).transpose() * g);
    });
  }

  // a (n x m) + b (1 x m), broadcast over rows
  Var add_bias(Var a, Var b) {
    Mat v = val(a);
    v.rowwise() += val(b).row(0);
    return push(std::move(v), needs(a) || needs(b), [a, b](Tape& t, const Mat& g) {
      if (t.needs(a)) t.accumulate(a, g);
      if (t.needs(b)) t.accumulate(b, g.colwise().sum());
    });
  }

  Var relu(Var a) {
    Mat v = val(a).cwiseMax(0.0);
    return push(std::move(v), needs(a), [a](Tape& t, const Mat& g) {
      t.accumulate(a, (t.val(a).array() > 0.0).select(g.array(), 0.0).matrix());
    });
  }

  Var scale(Var a, double c) {
    Mat v = c * val(a);
    return push(std::move(v), needs(a), [a, c](Tape& t, const Mat& g) { t.accumulate(a, c * g); });
  }

  Var add(Var a, Var b) {
    Mat v = val(a) + val(b);
    return push(std::move(v), needs(a) || needs(b), [a, b](Tape& t, const Mat& g) {
      if (t.needs(a)) t.accumulate(a, g);
      if (t.needs(b)) t.accumulate(b, g);
    });
  }

  // sum of the squared entries: a scalar (1 x 1)
  Var sum_squares(Var a) {
    Mat v(1, 1);
    v(0, 0) = val(a).squaredNorm();
    return push(std::move(v), needs(a), [a](Tape& t, const Mat& g) { t.accumulate(a, 2.0 * g(0, 0) * t.val(a)); });
  }

  // The margin loss of features x (B x D) against class weights w (C x D): a scalar (1 x 1).
  // Forward: ml::forward, which leaves in the node's workspace what backward needs and returns
  // the context (the loss, the policy, a view of W); backward: ml::backward of that context with
  // the upstream gradient dTotal/dL. The context refers to the workspace and to W, which must
  // outlive it unchanged, so the node owns both: the workspace and its own copy of W's value
  // (rather than a view into the tape's nodes, whose storage the tape manages).
  template <typename Policy>
  Var margin_loss(const Policy& policy, Var x, Var w, const Eigen::VectorXi& labels) {
    auto ws = std::make_shared<ml::Workspace<double>>();
    auto w_value = std::make_shared<const Mat>(val(w));
    const auto fwd = ml::forward(policy, val(x), *w_value, labels, *ws);
    Mat v(1, 1);
    v(0, 0) = fwd.loss();
    return push(std::move(v), needs(x) || needs(w), [fwd, x, w, ws, w_value](Tape& t, const Mat& g) {
      Mat dX(t.val(x).rows(), t.val(x).cols()), dW(t.val(w).rows(), t.val(w).cols());
      ml::backward(fwd, g(0, 0), {dX, dW});
      if (t.needs(x)) t.accumulate(x, dX);
      if (t.needs(w)) t.accumulate(w, dW);
    });
  }

  // Reverse pass from a scalar: seeds d out / d out = 1 and runs the recorded backward
  // functions in reverse order.
  void backward(Var out) {
    for (Node& n : nodes_) n.grad.setZero(n.value.rows(), n.value.cols());
    nodes_[out.id].grad.setOnes();
    for (int id = out.id; id >= 0; --id) {
      Node& n = nodes_[id];
      if (n.requires_grad && n.backward) n.backward(*this, n.grad);
    }
  }

  const Mat& val(Var v) const { return nodes_[v.id].value; }
  const Mat& grad(Var v) const { return nodes_[v.id].grad; }
  double scalar(Var v) const { return nodes_[v.id].value(0, 0); }

 private:
  using Backward = std::function<void(Tape&, const Mat&)>;
  struct Node {
    Mat value, grad;
    bool requires_grad;
    Backward backward;
  };

  Var push(Mat value, bool requires_grad, Backward backward) {
    nodes_.push_back(Node{std::move(value), Mat(), requires_grad, std::move(backward)});
    return Var{static_cast<int>(nodes_.size()) - 1};
  }
  bool needs(Var v) const { return nodes_[v.id].requires_grad; }
  template <typename G>
  void accumulate(Var v, const G& g) {
    nodes_[v.id].grad += g;
  }

  std::vector<Node> nodes_;
};

// ---------------------------------------------------------------------------------------------
// A two-layer embedding network and its class weights.

struct Params {
  Mat W1, b1, W2, b2, W;  // in x hidden, 1 x hidden, hidden x dim, 1 x dim, classes x dim
};

Params init_params(int in, int hidden, int dim, int classes, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto random = [&](int r, int c, double s) {
    Mat m(r, c);
    for (Eigen::Index k = 0; k < m.size(); ++k) m.data()[k] = s * normal(rng);
    return m;
  };
  return Params{random(in, hidden, std::sqrt(2.0 / in)), random(1, hidden, 0.1), random(hidden, dim, std::sqrt(1.0 / hidden)),
                random(1, dim, 0.1), random(classes, dim, 1.0)};
}

struct Graph {
  Tape tape;
  Tape::Var W1, b1, W2, b2, W, loss;
};

// total = loss_weight * margin_loss(relu(A W1 + b1) W2 + b2, W) + wd * |W1|^2
template <typename Policy>
void build(Graph& g, const Params& p, const Mat& inputs, const Eigen::VectorXi& labels, const Policy& policy,
           double loss_weight, double wd) {
  Tape& t = g.tape;
  g.W1 = t.leaf(p.W1, true);
  g.b1 = t.leaf(p.b1, true);
  g.W2 = t.leaf(p.W2, true);
  g.b2 = t.leaf(p.b2, true);
  g.W = t.leaf(p.W, true);
  const Tape::Var a = t.leaf(inputs, false);
  const Tape::Var h = t.relu(t.add_bias(t.matmul(a, g.W1), g.b1));
  const Tape::Var x = t.add_bias(t.matmul(h, g.W2), g.b2);
  const Tape::Var margin = t.margin_loss(policy, x, g.W, labels);
  g.loss = t.add(t.scale(margin, loss_weight), t.scale(t.sum_squares(g.W1), wd));
}

// ---------------------------------------------------------------------------------------------
// Gradient check: every parameter entry, central differences through the whole tape.

template <typename Policy>
bool gradient_check(const char* name, const Policy& policy) {
  const int B = 7, in = 6, hidden = 5, dim = 4, classes = 3;
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0.0, 1.0);
  Mat inputs(B, in);
  for (Eigen::Index k = 0; k < inputs.size(); ++k) inputs.data()[k] = normal(rng);
  Eigen::VectorXi labels(B);
  for (int i = 0; i < B; ++i) labels(i) = i % classes;
  Params p = init_params(in, hidden, dim, classes, 5);
  const double loss_weight = 0.7, wd = 1e-3;

  auto total = [&](const Params& q) {
    Graph g;
    build(g, q, inputs, labels, policy, loss_weight, wd);
    return g.tape.scalar(g.loss);
  };
  Graph g;
  build(g, p, inputs, labels, policy, loss_weight, wd);
  g.tape.backward(g.loss);

  struct Entry {
    const char* name;
    Mat Params::*member;
    Tape::Var var;
  };
  const Entry entries[] = {{"W1", &Params::W1, g.W1}, {"b1", &Params::b1, g.b1}, {"W2", &Params::W2, g.W2},
                           {"b2", &Params::b2, g.b2}, {"W", &Params::W, g.W}};
  const double h = 1e-6;
  double worst = 0;
  for (const Entry& e : entries) {
    const Mat& analytic = g.tape.grad(e.var);
    const double scale = std::max(1.0, analytic.cwiseAbs().maxCoeff());
    for (Eigen::Index k = 0; k < analytic.size(); ++k) {
      Params plus = p, minus = p;
      (plus.*e.member).data()[k] += h;
      (minus.*e.member).data()[k] -= h;
      const double numeric = (total(plus) - total(minus)) / (2 * h);
      worst = std::max(worst, std::fabs(numeric - analytic.data()[k]) / scale);
    }
  }
  const bool ok = worst < 1e-6;
  std::printf("  %-28s loss %.6f  max |fd - tape| / max(1, |grad|) = %.2e  %s\n", name, g.tape.scalar(g.loss), worst,
              ok ? "ok" : "FAILED");
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Training on synthetic data: C Gaussian clusters in 10 dimensions.

template <typename Policy>
bool train(const char* name, const Policy& policy) {
  const int n = 1024, in = 10, hidden = 32, dim = 8, classes = 6, batch = 64, steps = 300;
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  Mat centres(classes, in), inputs(n, in);
  for (Eigen::Index k = 0; k < centres.size(); ++k) centres.data()[k] = 1.5 * normal(rng);
  Eigen::VectorXi labels(n);
  for (int i = 0; i < n; ++i) {
    labels(i) = i % classes;
    for (int k = 0; k < in; ++k) inputs(i, k) = centres(labels(i), k) + normal(rng);
  }
  Params p = init_params(in, hidden, dim, classes, 9);
  const double lr = 0.2, wd = 1e-4;
  std::printf("  %-10s", name);
  double first = 0, last = 0, running = 0;
  for (int step = 0; step < steps; ++step) {
    const int start = (step * batch) % n;
    Graph g;
    build(g, p, Mat(inputs.middleRows(start, batch)), Eigen::VectorXi(labels.segment(start, batch)), policy, 1.0, wd);
    g.tape.backward(g.loss);
    p.W1 -= lr * g.tape.grad(g.W1);
    p.b1 -= lr * g.tape.grad(g.b1);
    p.W2 -= lr * g.tape.grad(g.W2);
    p.b2 -= lr * g.tape.grad(g.b2);
    p.W -= lr * g.tape.grad(g.W);
    const double loss = g.tape.scalar(g.loss);
    running = step == 0 ? loss : 0.9 * running + 0.1 * loss;
    if (step == 0) first = loss;
    if (step % 30 == 0 || step == steps - 1) std::printf(" %7.3f", running);
    last = running;
  }
  const bool ok = std::isfinite(last) && last < 0.5 * first;
  std::printf("  %s\n", ok ? "" : "  (did not fall: FAILED)");
  return ok;
}

int main(int argc, char** argv) {
  const bool check_only = argc > 1 && std::string(argv[1]) == "--check-only";
  bool ok = true;
  std::printf("gradient check: finite differences (double) through the tape, every parameter\n");
  ok &= gradient_check("NormFace s=8", ml::NormFace<double>{8.0});
  ok &= gradient_check("CosFace s=8 m=0.35", ml::CosFace<double>{8.0, 0.35});
  ok &= gradient_check("ArcFace s=8 m=0.5", ml::ArcFace<double>{8.0, 0.5});
  ok &= gradient_check("Combined s=8 (1, 0.3, 0.2)", ml::CombinedMargin<double>{8.0, 1.0, 0.3, 0.2});
  ok &= gradient_check("SphereFace m=4 lambda=5", ml::SphereFace<double>{4, 5.0});
  ok &= gradient_check("SphereFace m=4 lambda=0", ml::SphereFace<double>{4, 0.0});
  if (!check_only) {
    std::printf("\ntraining 10 -> 32 -> ReLU -> 8, 6 classes, batch 64, SGD: running loss every 30 steps\n");
    ok &= train("NormFace", ml::NormFace<double>{8.0});
    ok &= train("CosFace", ml::CosFace<double>{8.0, 0.35});
    ok &= train("ArcFace", ml::ArcFace<double>{8.0, 0.5});
  }
  std::printf("%s\n", ok ? "all checks passed" : "FAILED");
  return ok ? 0 : 1;
}
