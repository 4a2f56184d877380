// Test support: deterministic inputs, finite differences, comparisons. Nothing here calls the
// library's internals; expected values come from finite differences, the PyTorch reference
// files or closed forms.
#pragma once

#include <marginloss/marginloss.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

namespace mltest {


namespace ml = marginloss;
using ml::Index;
template <typename T>
using Mat = ml::RowMatrix<T>;

// CurricularFace with tau held fixed (update_tau_in_forward = false): what tests that call the
// loss repeatedly on one policy (finite differences, comparisons) need.
template <typename T>
ml::CurricularFace<T> fixed_tau(ml::CurricularFace<T> p) {
  p.update_tau_in_forward = false;
  return p;
}

// Bit-for-bit equality (the reproducibility guarantees): same shape and the same bytes, so
// -0 != +0 and NaN payloads count.
template <typename A, typename B>
bool same_bits(const A& a, const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  return std::memcmp(a.data(), b.data(), sizeof(typename A::Scalar) * static_cast<std::size_t>(a.size())) == 0;
}

template <typename T>
bool same_bits_scalar(T a, T b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// splitmix64: the same stream the PyTorch reference script uses for its large cases.
struct SplitMix64 {
  std::uint64_t state;
  explicit SplitMix64(std::uint64_t seed) : state(seed) {}
  std::uint64_t next() {
    state += 0x9E3779B97F4A7C15ULL;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double symmetric() { return 2.0 * uniform() - 1.0; }                        // [-1, 1)
  double normal() {  // Box-Muller
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

struct Case {
  Mat<double> X, W;
  Eigen::VectorXi labels;
};

// Random X (B x D), W (C x D), labels; rows with varied norms.
inline Case random_case(Index B, Index D, Index C, std::uint64_t seed) {
  SplitMix64 rng(seed);
  Case c;
  c.X.resize(B, D);
  c.W.resize(C, D);
  c.labels.resize(B);
  for (Index i = 0; i < B; ++i) {
    const double r = 0.5 + 2.0 * rng.uniform();
    for (Index k = 0; k < D; ++k) c.X(i, k) = r * rng.normal();
  }
  for (Index j = 0; j < C; ++j) {
    const double r = 0.5 + 1.5 * rng.uniform();
    for (Index k = 0; k < D; ++k) c.W(j, k) = r * rng.normal();
  }
  for (Index i = 0; i < B; ++i) c.labels(i) = static_cast<int>(rng.next() % static_cast<std::uint64_t>(C));
  return c;
}

// Random case in which sample i has target cosine exactly targets[i] (up to rounding), with
// distinct labels 0..B-1 (requires C >= B) and the other classes random.
inline Case case_with_targets(const std::vector<double>& targets, Index D, Index C, std::uint64_t seed) {
  const Index B = static_cast<Index>(targets.size());
  Case c = random_case(B, D, C, seed);
  SplitMix64 rng(seed ^ 0x5bd1e995ULL);
  for (Index i = 0; i < B; ++i) {
    c.labels(i) = static_cast<int>(i);
    Eigen::VectorXd xh = c.X.row(i).transpose().normalized();
    Eigen::VectorXd u(D);
    for (Index k = 0; k < D; ++k) u(k) = rng.normal();
    u -= u.dot(xh) * xh;
    u.normalize();
    const double t = targets[static_cast<std::size_t>(i)];
    const double r = 0.5 + 1.5 * rng.uniform();
    c.W.row(i) = (r * (t * xh + std::sqrt(std::max(0.0, 1.0 - t * t)) * u)).transpose();
  }
  return c;
}

// max |a - b| / max(max |b|, floor): the relative error of a whole array.
template <typename A, typename B>
double rel_error(const A& a, const B& b, double floor = 1e-300) {
  const double scale = std::max(b.cwiseAbs().maxCoeff(), floor);
  return (a - b).cwiseAbs().maxCoeff() / scale;
}

inline double rel_error(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-300); }

// Central finite differences of f with respect to every entry of M (step h relative to the
// entry's magnitude, at least h absolute).
inline Mat<double> fd_gradient(Mat<double>& M, const std::function<double()>& f, double h = 1e-6) {
  Mat<double> g(M.rows(), M.cols());
  for (Index i = 0; i < M.rows(); ++i)
    for (Index k = 0; k < M.cols(); ++k) {
      const double keep = M(i, k);
      const double step = h * std::max(1.0, std::fabs(keep));
      M(i, k) = keep + step;
      const double up = f();
      M(i, k) = keep - step;
      const double down = f();
      M(i, k) = keep;
      g(i, k) = (up - down) / (2 * step);
    }
  return g;
}

// Calls fn(policy) for every policy, in double, with settings under which random data has
// hard and easy non-targets for the mining policies.
template <typename Fn>
void for_each_policy(Fn&& fn) {
  fn(ml::NormFace<double>{16});
  fn(ml::CosFace<double>{30, 0.35});
  fn(ml::ArcFace<double>{64, 0.5});
  fn(ml::ArcFace<double>{64, 0.5, ml::Fallback::none, ml::Gradient::straight_through});
  fn(ml::CombinedMargin<double>{64, 1, 0.3, 0.2});
  fn(ml::SphereFace<double>{4, 5.0});
  fn(ml::SphereFace<double>{3, 0.0, ml::Scale::fixed, 30});
  fn(ml::SVSoftmax<double>{30, 0.35, 1.2});
  fn(ml::MVSoftmax<double>{32, 0.35, 1.2});
  fn(ml::MVSoftmax<double>{32, 0.5, 1.2, ml::MarginTarget::additive_angular, ml::MVVariant::fixed});
  fn(fixed_tau(ml::CurricularFace<double>{64, 0.5, 0.3}));
  fn(ml::AMMSoftmax<double>{64, 0.5, 0.1});
}

}  // namespace mltest
