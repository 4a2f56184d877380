// marginloss_profile: where the time of one forward + backward goes, from the public API.
//
//   marginloss_profile POLICY B D C [STEPS] [--loss-only]
//
// Times, STEPS times each (default 5, medians reported), interleaved in every step:
//   forward()  = norms + K = X^ W^T + the row pass (scale/clamp, row max, sum of exp)
//   backward() = the gradient sweep + dX = G W + its projection + dW = G^T X^ + its projection
//   and the three bare products on buffers of the same shapes.
// forward - K and backward - (dX + dW) are what the loss costs beyond its products.
// --loss-only runs just STEPS forward_backward() calls with nothing else (a target for perf
// record / valgrind).
#include <marginloss/marginloss.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace ml = marginloss;
using Mat = ml::RowMatrix<float>;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <typename P>
int profile(const P& policy, ml::Index B, ml::Index D, ml::Index C, int steps, bool loss_only) {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  Mat X(B, D), W(C, D), dX(B, D), dW(C, D);
  for (ml::Index i = 0; i < X.size(); ++i) X.data()[i] = normal(rng);
  for (ml::Index i = 0; i < W.size(); ++i) W.data()[i] = normal(rng);
  std::uniform_int_distribution<int> label(0, static_cast<int>(C) - 1);
  Eigen::VectorXi labels(B);
  for (ml::Index i = 0; i < B; ++i) labels(i) = label(rng);
  ml::Workspace<float> ws;
  float loss = ml::forward_backward(policy, X, W, labels, {dX, dW}, ws);

  if (loss_only) {
    const auto t0 = Clock::now();
    for (int k = 0; k < steps; ++k) loss += ml::forward_backward(policy, X, W, labels, {dX, dW}, ws);
    std::printf("%s %ldx%ldx%ld: %d steps, %.1f ms per step (loss %g)\n", P::name, static_cast<long>(B),
                static_cast<long>(D), static_cast<long>(C), steps, ms_since(t0) / steps, static_cast<double>(loss));
    return 0;
  }

  const Mat xhat = X.rowwise().normalized();
  const Mat G = Mat::Constant(B, C, 1e-4f);
  Mat K(B, C), pX(B, D), pW(C, D);
  std::vector<double> tf, tb, tk, tx, tw, tn, tv, tz;
  ml::Vector<float> inv_norm;
  Eigen::VectorXd sq;
  for (int k = 0; k < steps; ++k) {
    // The row norms of W as the engine computes them (detail::compute_row_norms, X's are
    // B/C of that), and a vectorised double-precision reference of the same sums.
    auto t0 = Clock::now();
    ml::detail::compute_row_norms<float>("W", W, nullptr, inv_norm);
    tn.push_back(ms_since(t0));
    t0 = Clock::now();
    sq = W.cast<double>().rowwise().squaredNorm();
    tv.push_back(ms_since(t0));
    // What Eigen's product does first: zero the destination (B x C here).
    t0 = Clock::now();
    K.setZero();
    tz.push_back(ms_since(t0));
    t0 = Clock::now();
    const auto fwd = ml::forward(policy, X, W, labels, ws);
    loss = fwd.loss();
    tf.push_back(ms_since(t0));
    t0 = Clock::now();
    ml::backward(fwd, 1.f, {dX, dW});
    tb.push_back(ms_since(t0));
    t0 = Clock::now();
    K.noalias() = xhat * W.transpose();
    tk.push_back(ms_since(t0));
    t0 = Clock::now();
    pX.noalias() = G * W;
    tx.push_back(ms_since(t0));
    t0 = Clock::now();
    pW.noalias() = G.transpose() * xhat;
    tw.push_back(ms_since(t0));
  }
  const double f = median(tf), b = median(tb), kk = median(tk), x = median(tx), w = median(tw);
  std::printf("%s %ldx%ldx%ld, %d steps (medians, ms)\n", P::name, static_cast<long>(B), static_cast<long>(D),
              static_cast<long>(C), steps);
  std::printf("  forward   %9.1f   K = X^W^T %9.1f   forward - K          %9.1f\n", f, kk, f - kk);
  std::printf("  backward  %9.1f   dX + dW   %9.1f   backward - products  %9.1f   (dX %.1f, dW %.1f)\n", b, x + w,
              b - x - w, x, w);
  std::printf("  total     %9.1f   products  %9.1f   ratio %.3f   beyond the products %.1f (%.0f%%)\n", f + b,
              kk + x + w, (f + b) / (kk + x + w), f + b - kk - x - w, 100.0 * (f + b - kk - x - w) / (f + b));
  std::printf("  W row norms: engine %.1f, vectorised double (Eigen cast + squaredNorm, 1 thread) %.1f;"
              " zeroing the B x C product %.1f\n",
              median(tn), median(tv), median(tz));
  std::printf("  (loss %g, %g)\n", static_cast<double>(loss + dX(0, 0) * 0 + dW(0, 0) * 0), sq(0) * 0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool loss_only = false;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--loss-only") == 0)
      loss_only = true;
    else
      args.emplace_back(argv[i]);
  }
  if (args.size() < 4) {
    std::fprintf(stderr, "usage: %s POLICY B D C [STEPS] [--loss-only]\n", argv[0]);
    return 2;
  }
  const ml::Index B = std::atol(args[1].c_str()), D = std::atol(args[2].c_str()), C = std::atol(args[3].c_str());
  const int steps = args.size() > 4 ? std::atoi(args[4].c_str()) : 5;
  if (B <= 0 || D <= 0 || C <= 0 || steps <= 0) {
    std::fprintf(stderr, "B, D, C and STEPS must be positive\n");
    return 2;
  }
  const std::string& name = args[0];
  if (name == "NormFace") return profile(ml::NormFace<float>{}, B, D, C, steps, loss_only);
  if (name == "CosFace") return profile(ml::CosFace<float>{}, B, D, C, steps, loss_only);
  if (name == "ArcFace") return profile(ml::ArcFace<float>{}, B, D, C, steps, loss_only);
  if (name == "CombinedMargin") return profile(ml::CombinedMargin<float>{}, B, D, C, steps, loss_only);
  if (name == "SphereFace") return profile(ml::SphereFace<float>{}, B, D, C, steps, loss_only);
  std::fprintf(stderr, "unknown policy %s\n", name.c_str());
  return 2;
}
