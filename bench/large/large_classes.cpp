// Very many classes: time and peak memory of forward + backward, class-chunked vs dense.
//
//   marginloss_large_classes memory  B D C BLOCK [REPS]
//       One configuration per process (peak RSS is a per-process high-water mark, so run_large.sh
//       starts one process per configuration). BLOCK: "dense" (one B x C cosine buffer),
//       "auto" (Options::class_block = 0: dense while B x C fits Options::memory_budget, else
//       blocks) or a number of classes per block. Prints one CSV line:
//       B,D,C,block,class_block_used,median_ms,min_ms,peak_rss_MiB,operands_MiB,ratio,baseline_MiB
//       where operands = X + W + dX + dW and ratio = peak RSS / operands.
//   marginloss_large_classes compare B D C REPS BLOCK...
//       Same process, same inputs, the BLOCK settings interleaved REPS times (after one warm-up
//       each); prints per setting the median and min in ms and the median ratio to the first.
//
// ArcFace (s = 64, m = 0.5), fp32. X, W, dX and dW are allocated once; W is filled by a cheap
// hash (no copy of it is ever made here), X likewise.
#include <marginloss/marginloss.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace ml = marginloss;
using ml::Index;
using Mat = ml::RowMatrix<float>;

namespace {

#ifndef MARGINLOSS_BENCH_FLAGS
#define MARGINLOSS_BENCH_FLAGS "unknown flags"
#endif

float hashed(std::uint64_t stream, std::uint64_t i) {
  std::uint64_t z = (stream << 56) ^ (i * 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 40) * 0x1.0p-23 - 1.0);  // [-1, 1)
}

void fill(Mat& M, std::uint64_t stream) {
  const Index n = M.size();
  float* p = M.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (Index k = 0; k < n; ++k) p[k] = hashed(stream, static_cast<std::uint64_t>(k));
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

// "dense" -> C, "auto" -> 0, else the number.
Index parse_block(const char* s, Index C) {
  if (std::strcmp(s, "dense") == 0) return C;
  if (std::strcmp(s, "auto") == 0) return 0;
  return std::atoll(s);
}

struct Problem {
  Mat X, W, dX, dW;
  Eigen::VectorXi labels;
  ml::Workspace<float> ws;
  Problem(Index B, Index D, Index C) : X(B, D), W(C, D), dX(B, D), dW(C, D), labels(B) {
    fill(X, 1);
    fill(W, 2);
    for (Index i = 0; i < B; ++i)
      labels(i) = static_cast<int>((static_cast<double>(hashed(3, static_cast<std::uint64_t>(i))) + 1.0) * 0.5 *
                                   static_cast<double>(C)) % static_cast<int>(C);
  }
  double run_ms(Index block) {
    ml::Options o;
    o.class_block = block;
    const auto t0 = std::chrono::steady_clock::now();
    const float loss = ml::forward_backward(ml::ArcFace<float>{64, 0.5f}, X, W, labels, {dX, dW}, ws, o);
    const auto t1 = std::chrono::steady_clock::now();
    if (!(loss > 0)) std::fprintf(stderr, "unexpected loss %g\n", static_cast<double>(loss));
    return std::chrono::duration<double, std::milli>(t1 - t0).count();
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int usage() {
  std::fprintf(stderr,
               "usage: marginloss_large_classes memory B D C BLOCK [REPS]\n"
               "       marginloss_large_classes compare B D C REPS BLOCK...\n"
               "BLOCK: dense | auto | classes per block\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) return usage();
  const std::string mode = argv[1];
  const Index B = std::atoll(argv[2]), D = std::atoll(argv[3]), C = std::atoll(argv[4]);
  if (B <= 0 || D <= 0 || C <= 0) return usage();

  if (mode == "memory") {
    const Index block = parse_block(argv[5], C);
    const int reps = argc > 6 ? std::atoi(argv[6]) : 3;
    const double baseline = peak_rss_mib();
    Problem p(B, D, C);
    p.run_ms(block);  // warm-up: sizes the workspace, touches dW
    std::vector<double> ms;
    for (int r = 0; r < reps; ++r) ms.push_back(p.run_ms(block));
    const double operands = static_cast<double>(sizeof(float)) * static_cast<double>(2 * B * D + 2 * C * D) / 1048576.0;
    const double peak = peak_rss_mib();
    std::printf("%lld,%lld,%lld,%s,%lld,%.1f,%.1f,%.1f,%.1f,%.3f,%.1f\n", static_cast<long long>(B),
                static_cast<long long>(D), static_cast<long long>(C), argv[5], static_cast<long long>(p.ws.class_block()),
                median(ms), *std::min_element(ms.begin(), ms.end()), peak, operands, peak / operands, baseline);
    return 0;
  }

  if (mode == "compare") {
    const int reps = std::atoi(argv[5]);
    if (reps <= 0 || argc < 7) return usage();
    std::vector<std::string> names(argv + 6, argv + argc);
    std::vector<Index> blocks;
    for (const auto& n : names) blocks.push_back(parse_block(n.c_str(), C));
    Problem p(B, D, C);
    for (Index b : blocks) p.run_ms(b);  // warm-up
    std::vector<std::vector<double>> ms(blocks.size());
    std::vector<std::vector<double>> ratio(blocks.size());
    for (int r = 0; r < reps; ++r) {
      std::vector<double> round(blocks.size());
      for (std::size_t k = 0; k < blocks.size(); ++k) round[k] = p.run_ms(blocks[k]);
      for (std::size_t k = 0; k < blocks.size(); ++k) {
        ms[k].push_back(round[k]);
        ratio[k].push_back(round[k] / round[0]);
      }
    }
    std::printf("B = %lld, D = %lld, C = %lld, fp32 ArcFace, %d interleaved repetitions (%s)\n",
                static_cast<long long>(B), static_cast<long long>(D), static_cast<long long>(C), reps,
                MARGINLOSS_BENCH_FLAGS);
    std::printf("| class_block | median ms | min ms | median ratio to %s |\n|---|---|---|---|\n", names[0].c_str());
    for (std::size_t k = 0; k < blocks.size(); ++k)
      std::printf("| %s | %.1f | %.1f | %.3f |\n", names[k].c_str(), median(ms[k]),
                  *std::min_element(ms[k].begin(), ms[k].end()), median(ratio[k]));
    return 0;
  }
  return usage();
}
