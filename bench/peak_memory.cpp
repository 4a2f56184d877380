// marginloss_peak_memory: the peak resident memory of forward_backward() calls, measured in a
// process of its own so nothing else has touched its heap.
//
//   marginloss_peak_memory POLICY B D C [CALLS]
//
// POLICY is NormFace, CosFace, ArcFace, CombinedMargin or SphereFace. The inputs X (B x D),
// W (C x D) and the labels are made and touched first; then the peak-RSS mark is reset
// (/proc/self/clear_refs, or the current peak is kept as the baseline where that is not
// allowed) and CALLS (default 2) calls of the allocating form forward_backward(policy, X, W,
// labels) run, each allocating its own workspace, dX and dW, as a framework that calls it
// per step would. Prints one JSON object: baseline and peak RSS in bytes, their difference
// (the call's peak memory beyond its inputs), and Workspace<float>::bytes_required.
#include <marginloss/marginloss.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>

namespace ml = marginloss;

namespace {

// A field of /proc/self/status in bytes (VmRSS, VmHWM); -1 where unreadable.
long long status_bytes(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(field);
  while (std::getline(f, line))
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':')
      return std::atoll(line.c_str() + n + 1) * 1024;
  return -1;
}

bool reset_peak() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.close();
  return static_cast<bool>(f);
}

template <typename P>
float run(const P& policy, const ml::RowMatrix<float>& X, const ml::RowMatrix<float>& W, const Eigen::VectorXi& labels,
          int calls) {
  float loss = 0;
  for (int k = 0; k < calls; ++k) {
    auto r = ml::forward_backward(policy, X, W, labels);
    loss = r.loss + 0 * (r.dX(0, 0) + r.dW(0, 0));
  }
  return loss;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s POLICY B D C [CALLS]\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const ml::Index B = std::atol(argv[2]), D = std::atol(argv[3]), C = std::atol(argv[4]);
  const int calls = argc > 5 ? std::atoi(argv[5]) : 2;
  if (B <= 0 || D <= 0 || C <= 0 || calls <= 0) {
    std::fprintf(stderr, "B, D, C and CALLS must be positive\n");
    return 2;
  }

  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal(0.f, 1.f);
  ml::RowMatrix<float> X(B, D), W(C, D);
  for (ml::Index i = 0; i < X.size(); ++i) X.data()[i] = normal(rng);
  for (ml::Index i = 0; i < W.size(); ++i) W.data()[i] = normal(rng);
  std::uniform_int_distribution<int> label(0, static_cast<int>(C) - 1);
  Eigen::VectorXi labels(B);
  for (ml::Index i = 0; i < B; ++i) labels(i) = label(rng);

  const bool reset = reset_peak();
  const long long base = reset ? status_bytes("VmRSS") : status_bytes("VmHWM");

  float loss = 0;
  if (name == "NormFace") loss = run(ml::NormFace<float>{}, X, W, labels, calls);
  else if (name == "CosFace") loss = run(ml::CosFace<float>{}, X, W, labels, calls);
  else if (name == "ArcFace") loss = run(ml::ArcFace<float>{}, X, W, labels, calls);
  else if (name == "CombinedMargin") loss = run(ml::CombinedMargin<float>{}, X, W, labels, calls);
  else if (name == "SphereFace") loss = run(ml::SphereFace<float>{}, X, W, labels, calls);
  else {
    std::fprintf(stderr, "unknown policy %s\n", name.c_str());
    return 2;
  }

  const long long peak = status_bytes("VmHWM");
  std::printf(
      "{\"policy\": \"%s\", \"B\": %ld, \"D\": %ld, \"C\": %ld, \"calls\": %d, \"loss\": %.6g, "
      "\"baseline_rss\": %lld, \"peak_rss\": %lld, \"peak_delta\": %lld, \"peak_reset\": %s, "
      "\"workspace_bytes\": %zu, \"gradient_bytes\": %lld}\n",
      name.c_str(), static_cast<long>(B), static_cast<long>(D), static_cast<long>(C), calls, static_cast<double>(loss),
      base, peak, peak - base, reset ? "true" : "false", ml::Workspace<float>::bytes_required(B, D, C),
      static_cast<long long>(sizeof(float)) * static_cast<long long>(B * D + C * D));
  return 0;
}
