// marginloss benchmarks: fp32 forward + backward of each policy against the three bare
// matrix products the loss cannot avoid, in the same binary, with the same Eigen (or BLAS,
// when built with marginloss::blas) and the same threads.
//
//   K  = X^ W^T   (B x C)      the cosines
//   dX = G W      (B x D)      G = dL/dcos (B x C)
//   dW = G^T X^   (C x D)
//
// Both together cost 6 B D C flops; GFLOP/s counters use that count for the loss too, so the
// loss's GFLOP/s divided by the products' is the inverse of the ratio below.
//
// Ratio on a noisy machine. Each iteration of a loss benchmark times one forward_backward()
// call AND one run of each formulation of the three bare products (whole and tiled, see
// Products) on buffers of the same shapes, back to back, in an order that rotates between
// iterations. The reported ratio is the median over iterations of (loss time / products time)
// of the same iteration, the products being the faster formulation in that iteration: a
// compile or another process that slows the machine for a while slows all parts alike, and
// the median drops the iterations that a burst hit on one part only. The benchmark's own time
// is the loss call alone (manual time, wall clock), so ms and GFLOP/s are the loss's.
//
// Counters (all per call, plain values, aggregated over --benchmark_repetitions as usual):
//   GFLOPs        6 B D C / median loss time
//   prod_GFLOPs   6 B D C / median time of the faster products
//   ratio         median_i(loss_i / min(whole_i, tiled_i))   <- the number the issue is about
//   ratio_whole, ratio_tiled   the same against each formulation
//   loss_ms, prod_ms, whole_ms, tiled_ms  medians of the parts (prod = the faster)
//   ws_MiB        Workspace<float>::bytes_required(B, D, C)
//   io_MiB        X, W, dX, dW (the caller's buffers)
// The products-only benchmarks (products/..., products_tiled/..., K/..., dX/..., dW/...) time
// the products alone.
//
// Peak resident memory of one call is measured by marginloss_peak_memory (a separate process,
// see peak_memory.cpp) and by compare_pytorch.py.
#include <benchmark/benchmark.h>

#include <marginloss/detail/threads.hpp>
#include <marginloss/marginloss.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "bench_common.hpp"

namespace ml = marginloss;
using Mat = ml::RowMatrix<float>;
using Clock = std::chrono::steady_clock;

namespace {

struct Shape {
  ml::Index B, D, C;
};

// The shapes of the issue: a small batch over 10k classes, and 100k classes at two batches.
const Shape kShapes[] = {{128, 512, 10000}, {256, 512, 100000}, {512, 512, 100000}};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The inputs of one shape, made once per process and shared by every benchmark of that shape.
struct Inputs {
  Mat X, W;
  Eigen::VectorXi labels;
};

const Inputs& inputs_for(const Shape& s) {
  static std::vector<std::pair<Shape, Inputs*>> cache;
  for (auto& e : cache)
    if (e.first.B == s.B && e.first.D == s.D && e.first.C == s.C) return *e.second;
  auto* in = new Inputs;  // lives for the process
  std::mt19937_64 rng(0x6d61726731u + static_cast<std::uint64_t>(s.C));
  std::normal_distribution<float> normal(0.f, 1.f);
  in->X.resize(s.B, s.D);
  in->W.resize(s.C, s.D);
  for (ml::Index i = 0; i < in->X.size(); ++i) in->X.data()[i] = normal(rng);
  for (ml::Index i = 0; i < in->W.size(); ++i) in->W.data()[i] = normal(rng);
  std::uniform_int_distribution<int> label(0, static_cast<int>(s.C) - 1);
  in->labels.resize(s.B);
  for (ml::Index i = 0; i < s.B; ++i) in->labels(i) = label(rng);
  cache.emplace_back(s, in);
  return *in;
}

// The three products of the loss on buffers of the loss's shapes and storage orders (all
// row-major), in two formulations, both timed so that the ratio is taken against the faster:
//   whole  one Eigen product per matrix (K = X^ W^T over all C classes, ...), each
//          parallelised by Eigen over its output;
//   tiled  the engine's formulation (detail/engine.hpp): the classes split into tiles of
//          Workspace::tile_for_block(C), each tile's three products done by one thread (dX as
//          per-thread partial sums added at the end). On this machine (Eigen 3.4, 2 threads)
//          the tiled K product is ~2x faster than the whole one.
struct Products {
  Mat xhat, G, K, dX, dW;
  std::vector<Mat> dx_part;  // threads - 1 partial dX (tiled)
  explicit Products(const Shape& s, const Inputs& in) {
    xhat = in.X.rowwise().normalized();
    // G: anything of the right size; its values do not change the cost of a product.
    G = Mat::Constant(s.B, s.C, 1e-4f);
    K.resize(s.B, s.C);
    dX.resize(s.B, s.D);
    dW.resize(s.C, s.D);
    const int threads = ml::detail::max_threads();
    for (int t = 1; t < threads; ++t) dx_part.emplace_back(s.B, s.D);
  }
  void k(const Mat& W) { K.noalias() = xhat * W.transpose(); }
  void dx(const Mat& W) { dX.noalias() = G * W; }
  void dw() { dW.noalias() = G.transpose() * xhat; }
  void all(const Mat& W) {
    k(W);
    dx(W);
    dw();
  }
  void all_tiled(const Mat& W) {
    const ml::Index C = W.rows(), B = xhat.rows(), tile = ml::Workspace<float>::tile_for_block(C);
    const ml::Index ntiles = (C + tile - 1) / tile;
    const int threads = ml::detail::max_threads();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (ml::Index t = 0; t < ntiles; ++t) {
      const ml::Index j0 = t * tile, n = std::min(tile, C - j0);
      K.middleCols(j0, n).noalias() = xhat * W.middleRows(j0, n).transpose();
    }
    dX.setZero();
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
      int tid = 0;
#if defined(_OPENMP)
      tid = omp_get_thread_num();
#endif
      Mat& part = tid == 0 ? dX : dx_part[static_cast<std::size_t>(tid - 1)];
      if (tid > 0) part.setZero();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (ml::Index t = 0; t < ntiles; ++t) {
        const ml::Index j0 = t * tile, n = std::min(tile, C - j0);
        part.noalias() += G.middleCols(j0, n) * W.middleRows(j0, n);
        dW.middleRows(j0, n).noalias() = G.middleCols(j0, n).transpose() * xhat;
      }
    }
    for (int t = 1; t < threads; ++t) dX += dx_part[static_cast<std::size_t>(t - 1)];
    (void)B;
  }
  void keep() {
    benchmark::DoNotOptimize(K.data());
    benchmark::DoNotOptimize(dX.data());
    benchmark::DoNotOptimize(dW.data());
    benchmark::ClobberMemory();
  }
};

double flops_of(const Shape& s) { return 6.0 * static_cast<double>(s.B) * static_cast<double>(s.D) * static_cast<double>(s.C); }

void set_shape_counters(benchmark::State& state, const Shape& s) {
  state.counters["B"] = static_cast<double>(s.B);
  state.counters["D"] = static_cast<double>(s.D);
  state.counters["C"] = static_cast<double>(s.C);
  constexpr double MiB = 1024.0 * 1024.0;
  state.counters["ws_MiB"] = static_cast<double>(ml::Workspace<float>::bytes_required(s.B, s.D, s.C)) / MiB;
  state.counters["io_MiB"] = 2.0 * sizeof(float) * static_cast<double>(s.B * s.D + s.C * s.D) / MiB;
}

template <typename Policy>
void BM_loss(benchmark::State& state, Policy policy, Shape s) {
  const Inputs& in = inputs_for(s);
  Mat dX(s.B, s.D), dW(s.C, s.D);
  ml::Workspace<float> ws;
  Products prod(s, in);
  // Steady state: the workspace is sized and the pages are touched before timing.
  float loss = ml::forward_backward(policy, in.X, in.W, in.labels, dX, dW, ws);
  prod.all(in.W);
  prod.all_tiled(in.W);

  std::vector<double> t_loss, t_whole, t_tiled, ratio, ratio_whole, ratio_tiled;
  int rotation = 0;
  for (auto _ : state) {
    double tl = 0, tw = 0, tt = 0;
    // The three parts of an iteration, in an order that rotates from one iteration to the next.
    for (int k = 0; k < 3; ++k) {
      const int part = (k + rotation) % 3;
      const auto t0 = Clock::now();
      if (part == 0) {
        loss = ml::forward_backward(policy, in.X, in.W, in.labels, dX, dW, ws);
        benchmark::DoNotOptimize(loss);
        benchmark::DoNotOptimize(dX.data());
        benchmark::DoNotOptimize(dW.data());
        benchmark::ClobberMemory();
        tl = seconds_since(t0);
      } else if (part == 1) {
        prod.all(in.W);
        prod.keep();
        tw = seconds_since(t0);
      } else {
        prod.all_tiled(in.W);
        prod.keep();
        tt = seconds_since(t0);
      }
    }
    rotation = (rotation + 1) % 3;
    state.SetIterationTime(tl);
    t_loss.push_back(tl);
    t_whole.push_back(tw);
    t_tiled.push_back(tt);
    ratio.push_back(tl / std::min(tw, tt));
    ratio_whole.push_back(tl / tw);
    ratio_tiled.push_back(tl / tt);
  }
  const double ml_s = median(t_loss), mw_s = median(t_whole), mt_s = median(t_tiled);
  const double mp_s = std::min(mw_s, mt_s);
  set_shape_counters(state, s);
  state.counters["loss_ms"] = 1e3 * ml_s;
  state.counters["prod_ms"] = 1e3 * mp_s;
  state.counters["whole_ms"] = 1e3 * mw_s;
  state.counters["tiled_ms"] = 1e3 * mt_s;
  state.counters["GFLOPs"] = flops_of(s) / ml_s * 1e-9;
  state.counters["prod_GFLOPs"] = flops_of(s) / mp_s * 1e-9;
  state.counters["ratio"] = median(ratio);
  state.counters["ratio_whole"] = median(ratio_whole);
  state.counters["ratio_tiled"] = median(ratio_tiled);
  state.counters["loss"] = static_cast<double>(loss);
}

// The three products alone (which = 0: all three; 1: K; 2: dX; 3: dW).
void BM_products(benchmark::State& state, int which, Shape s) {
  const Inputs& in = inputs_for(s);
  Products prod(s, in);
  prod.all(in.W);
  std::vector<double> t;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    switch (which) {
      case 1: prod.k(in.W); break;
      case 2: prod.dx(in.W); break;
      case 3: prod.dw(); break;
      case 4: prod.all_tiled(in.W); break;
      default: prod.all(in.W);
    }
    prod.keep();
    const double dt = seconds_since(t0);
    state.SetIterationTime(dt);
    t.push_back(dt);
  }
  const double m = median(t);
  set_shape_counters(state, s);
  const double f = (which == 0 || which == 4) ? flops_of(s) : flops_of(s) / 3.0;
  state.counters["prod_ms"] = 1e3 * m;
  state.counters["GFLOPs"] = f / m * 1e-9;
}

std::string shape_name(const Shape& s) {
  return std::to_string(s.B) + "x" + std::to_string(s.D) + "x" + std::to_string(s.C);
}

template <typename Policy>
void register_loss(const char* name, Policy policy) {
  for (const Shape& s : kShapes)
    benchmark::RegisterBenchmark((std::string("loss/") + name + "/" + shape_name(s)).c_str(),
                                 [policy, s](benchmark::State& st) { BM_loss(st, policy, s); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

void register_products() {
  const char* names[] = {"products", "K=XhWt", "dX=GW", "dW=GtXh", "products_tiled"};
  for (const Shape& s : kShapes)
    for (int which = 0; which < 5; ++which)
      benchmark::RegisterBenchmark((std::string(names[which]) + "/" + shape_name(s)).c_str(),
                                   [which, s](benchmark::State& st) { BM_products(st, which, s); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  register_products();
  register_loss("NormFace", ml::NormFace<float>{});
  register_loss("CosFace", ml::CosFace<float>{});
  register_loss("ArcFace", ml::ArcFace<float>{});
  register_loss("CombinedMargin", ml::CombinedMargin<float>{});
  register_loss("SphereFace", ml::SphereFace<float>{});

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  marginloss_bench::add_context();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
