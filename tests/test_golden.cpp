// Loss and gradients against the independent PyTorch-autograd implementation
// (tests/reference/generate_golden.py, float64): relative error <= 1e-8, where the relative
// error of an array is max|ours - torch| / max|torch|.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "support.hpp"

using namespace mltest;

namespace {

struct Golden {
  std::string file, policy;
  std::map<std::string, std::string> params;
  Case in;
  double loss = 0;
  Mat<double> dX, dW;  // dW holds only the rows listed in dW_rows
  std::vector<Index> dW_rows;
  Eigen::VectorXd margins, dmargins;  // adaptive policy only
};

Golden read_golden(const std::filesystem::path& path) {
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "cannot open ", path.string());
  Golden g;
  g.file = path.filename().string();
  std::string line, tok;
  std::getline(f, line);
  REQUIRE(line == "marginloss-golden 1");
  std::getline(f, line);
  std::istringstream pl(line);
  pl >> tok >> g.policy;
  while (pl >> tok) {
    const auto eq = tok.find('=');
    g.params[tok.substr(0, eq)] = tok.substr(eq + 1);
  }
  Index B, D, C;
  f >> tok >> B >> D >> C;
  REQUIRE(tok == "shape");
  f >> tok >> tok;
  if (tok == "inline") {
    g.in.X.resize(B, D);
    g.in.W.resize(C, D);
    g.in.labels.resize(B);
    f >> tok;
    for (Index k = 0; k < B * D; ++k) f >> g.in.X.data()[k];
    f >> tok;
    for (Index k = 0; k < C * D; ++k) f >> g.in.W.data()[k];
    f >> tok;
    for (Index k = 0; k < B; ++k) f >> g.in.labels(k);
    if (g.policy == "adaptive") {
      f >> tok;
      REQUIRE(tok == "margins");
      g.margins.resize(C);
      for (Index k = 0; k < C; ++k) f >> g.margins(k);
    }
  } else {
    REQUIRE(tok == "splitmix64");
    unsigned long long seed;
    f >> seed;
    SplitMix64 rng(seed);
    g.in.X.resize(B, D);
    g.in.W.resize(C, D);
    g.in.labels.resize(B);
    for (Index k = 0; k < B * D; ++k) g.in.X.data()[k] = rng.symmetric();
    for (Index k = 0; k < C * D; ++k) g.in.W.data()[k] = rng.symmetric();
    for (Index k = 0; k < B; ++k) g.in.labels(k) = static_cast<int>(rng.next() % static_cast<unsigned long long>(C));
    if (g.policy == "adaptive") {
      g.margins.resize(C);
      for (Index k = 0; k < C; ++k) g.margins(k) = 0.3 + 0.1 * rng.uniform();
    }
  }
  f >> tok >> g.loss;
  REQUIRE(tok == "loss");
  f >> tok;
  REQUIRE(tok == "dX");
  g.dX.resize(B, D);
  for (Index k = 0; k < B * D; ++k) f >> g.dX.data()[k];
  Index rows;
  f >> tok >> rows;
  REQUIRE(tok == "dW_rows");
  g.dW_rows.resize(static_cast<std::size_t>(rows));
  for (auto& r : g.dW_rows) f >> r;
  f >> tok;
  REQUIRE(tok == "dW");
  g.dW.resize(rows, D);
  for (Index k = 0; k < rows * D; ++k) f >> g.dW.data()[k];
  if (g.policy == "adaptive") {
    f >> tok;
    REQUIRE(tok == "dmargins");
    g.dmargins.resize(C);
    for (Index k = 0; k < C; ++k) f >> g.dmargins(k);
  }
  REQUIRE_MESSAGE(!f.fail(), "truncated golden file ", g.file);
  return g;
}

double num(const Golden& g, const std::string& key) {
  const auto it = g.params.find(key);
  REQUIRE_MESSAGE(it != g.params.end(), g.file, ": missing parameter ", key);
  return std::stod(it->second);
}
std::string str(const Golden& g, const std::string& key) { return g.params.at(key); }

ml::Fallback fallback(const std::string& s) {
  if (s == "hard") return ml::Fallback::hard_threshold;
  if (s == "easy") return ml::Fallback::easy_margin;
  REQUIRE(s == "none");
  return ml::Fallback::none;
}
ml::MarginTarget target(const std::string& s) {
  REQUIRE((s == "am" || s == "arc"));
  return s == "am" ? ml::MarginTarget::additive_cosine : ml::MarginTarget::additive_angular;
}
ml::Gradient gradient(const std::string& s) {
  return s == "exact" ? ml::Gradient::exact : ml::Gradient::straight_through;
}

// Calls fn(policy) with the policy the file describes.
template <typename T, typename Fn>
void with_policy(const Golden& g, Fn&& fn) {
  if (g.policy == "normface") {
    fn(ml::NormFace<T>{T(num(g, "s"))});
  } else if (g.policy == "cosface") {
    fn(ml::CosFace<T>{T(num(g, "s")), T(num(g, "m")), num(g, "conditional") != 0});
  } else if (g.policy == "arcface") {
    fn(ml::ArcFace<T>{T(num(g, "s")), T(num(g, "m")), fallback(str(g, "fallback")), gradient(str(g, "gradient"))});
  } else if (g.policy == "combined") {
    fn(ml::CombinedMargin<T>{T(num(g, "s")), T(num(g, "m1")), T(num(g, "m2")), T(num(g, "m3")),
                             fallback(str(g, "fallback")), gradient(str(g, "gradient"))});
  } else if (g.policy == "sphereface") {
    fn(ml::SphereFace<T>{static_cast<int>(num(g, "m")), T(num(g, "lambda")),
                         str(g, "scale") == "fixed" ? ml::Scale::fixed : ml::Scale::feature_norm, T(num(g, "s"))});
  } else if (g.policy == "adaptive") {
    const ml::Vector<T> margins = g.margins.cast<T>();  // the policy views it: alive through fn
    fn(ml::AdaptiveMargin<T>{T(num(g, "s")), margins, T(num(g, "lambda")),
                             str(g, "scope") == "all" ? ml::RegulariserScope::all_classes
                                                      : ml::RegulariserScope::batch_classes});
  } else if (g.policy == "svsoftmax") {
    fn(ml::SVSoftmax<T>{T(num(g, "s")), T(num(g, "m")), T(num(g, "t")), target(str(g, "target")),
                        fallback(str(g, "fallback"))});
  } else if (g.policy == "mvsoftmax") {
    fn(ml::MVSoftmax<T>{T(num(g, "s")), T(num(g, "m")), T(num(g, "t")), target(str(g, "target")),
                        str(g, "variant") == "fixed" ? ml::MVVariant::fixed : ml::MVVariant::adaptive,
                        fallback(str(g, "fallback")), num(g, "conditional") != 0});
  } else if (g.policy == "curricularface") {
    // tau as given per call in the golden file (the reference does not update it).
    fn(fixed_tau(ml::CurricularFace<T>{T(num(g, "s")), T(num(g, "m")), T(num(g, "tau")), T(0.99), fallback(str(g, "fallback"))}));
  } else if (g.policy == "ammsoftmax") {
    fn(ml::AMMSoftmax<T>{T(num(g, "s")), T(num(g, "m")), T(num(g, "m_h")), fallback(str(g, "fallback"))});
  } else {
    FAIL("unknown policy in ", g.file, ": ", g.policy);
  }
}

std::vector<std::filesystem::path> golden_files() {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(MARGINLOSS_GOLDEN_DIR))
    if (e.path().extension() == ".txt") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

Mat<double> rows_of(const Mat<double>& m, const std::vector<Index>& rows) {
  Mat<double> out(static_cast<Index>(rows.size()), m.cols());
  for (std::size_t k = 0; k < rows.size(); ++k) out.row(static_cast<Index>(k)) = m.row(rows[k]);
  return out;
}

}  // namespace

TEST_CASE("Every policy matches the PyTorch-autograd reference to 1e-8 (double)") {
  const auto files = golden_files();
  REQUIRE(files.size() >= 40);
  std::map<std::string, int> per_policy;
  for (const auto& path : files) {
    const Golden g = read_golden(path);
    CAPTURE(g.file);
    with_policy<double>(g, [&](const auto& policy) {
      const auto r = ml::forward_backward(policy, g.in.X, g.in.W, g.in.labels);
      CHECK(rel_error(r.loss, g.loss) < 1e-8);
      CHECK(rel_error(r.dX, g.dX) < 1e-8);
      CHECK(rel_error(rows_of(r.dW, g.dW_rows), g.dW) < 1e-8);
      if (g.dmargins.size() > 0) CHECK(rel_error(r.dmargins, g.dmargins) < 1e-8);
    });
    ++per_policy[g.policy];
  }
  for (const char* p : {"normface", "cosface", "arcface", "combined", "sphereface", "svsoftmax", "mvsoftmax",
                        "curricularface", "ammsoftmax", "adaptive"}) {
    CAPTURE(p);
    CHECK(per_policy[p] >= 3);
  }
}

TEST_CASE("Float agrees with the double reference") {
  // fp32 rounding of cosines (~1e-7) is amplified by s and by the margin slopes; 2e-3 of the
  // largest entry is far below what a wrong formula gives and above fp32 noise at s = 64.
  for (const auto& path : golden_files()) {
    const Golden g = read_golden(path);
    CAPTURE(g.file);
    const Mat<float> X = g.in.X.cast<float>(), W = g.in.W.cast<float>();
    bool near_one = g.file.find("near_pm1") != std::string::npos;
    with_policy<float>(g, [&](const auto& policy) {
      const auto r = ml::forward_backward(policy, X, W, g.in.labels);
      const double tol = near_one ? 5e-2 : 2e-3;
      CHECK(rel_error(static_cast<double>(r.loss), g.loss) < tol);
      CHECK(rel_error(r.dX.template cast<double>().eval(), g.dX) < tol);
      CHECK(rel_error(rows_of(r.dW.template cast<double>(), g.dW_rows), g.dW) < tol);
      if (g.dmargins.size() > 0) CHECK(rel_error(r.dmargins.template cast<double>().eval(), g.dmargins) < tol);
    });
  }
}
