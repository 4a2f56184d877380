// marginloss benchmarks: fp32 forward + backward of each policy against the three bare
// matrix products the loss cannot avoid, computed by every product library the binary links
// (Eigen always; oneDNN and BLAS when found), in the same binary, iterations and threads.
//
//   K  = X^ W^T   (B x C)      the cosines
//   dX = G W      (B x D)      G = dL/dcos (B x C)
//   dW = G^T X^   (C x D)
//
// Both together cost 6 B D C flops; GFLOP/s counters use that count for the loss too, so the
// loss's GFLOP/s divided by the products' is the inverse of the ratio below.
//
// The loss's own products come from the backend the binary links (marginloss::onednn,
// marginloss::blas or none: Eigen; MARGINLOSS_PRODUCTS), named in the context ("products").
//
// Ratio on a noisy machine. Each iteration of a loss benchmark times one forward_backward()
// call AND one run of each formulation of the three bare products (see Products: per library,
// whole and tiled) on buffers of the same shapes, back to back, in an order that rotates
// between iterations. The reported ratio is the median over iterations of (loss time /
// products time) of the same iteration, the products being the FASTEST formulation of any
// library in that iteration: a compile or another process that slows the machine for a while
// slows all parts alike, and the median drops the iterations that a burst hit on one part
// only. The benchmark's own time is the loss call alone (manual time, wall clock), so ms and
// GFLOP/s are the loss's.
//
// Counters (all per call, plain values, aggregated over --benchmark_repetitions as usual):
//   GFLOPs        6 B D C / median loss time
//   prod_GFLOPs   6 B D C / median time of the fastest formulation
//   ratio         median_i(loss_i / min_f products_f,i)   <- the number the issues are about
//   ratio_<f>     median_i(loss_i / products_f,i) for each formulation f
//   loss_ms, prod_ms (the fastest), <f>_ms    medians of the parts
//   fastest       index of the fastest formulation in the context's "formulations"
//   ws_MiB        Workspace<float>::bytes_required(B, D, C)
//   io_MiB        X, W, dX, dW (the caller's buffers)
// loss_chunked/... benchmarks (Options::class_block = 8192) also time the dense call in the
// same iterations: dense_ms, ratio_dense = median_i(chunked_i / dense_i).
// The products-only benchmarks (products/<f>/..., K/..., dX/..., dW/...) time the products alone.
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
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(MARGINLOSS_BENCH_ONEDNN)
#include <dnnl.h>
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
// row-major), computed by every product library the benchmark is linked with, each in two
// formulations where both make sense; every iteration of a loss benchmark times all of them:
//   whole  one product per matrix (K = X^ W^T over all C classes, ...), each parallelised by
//          the library itself (Eigen: OpenMP over the output; oneDNN: its OpenMP GEMM; BLAS:
//          its own threads);
//   tiled  the engine's formulation (detail/engine.hpp): the classes in tiles of
//          Workspace::tile_for_block(C), stored tile after tile, each tile's three products
//          done by one thread with a single-threaded product (dX as per-thread partial sums
//          added at the end), the tile's cosines standing in for G as in the engine.
// Formulations (key, library):
//   eigen_whole, eigen_tiled     Eigen (with EIGEN_USE_BLAS, i.e. marginloss::blas, Eigen hands
//                                these to BLAS: then they are labelled "BLAS via Eigen");
//   onednn_whole, onednn_tiled   dnnl_sgemm (MARGINLOSS_BENCH_ONEDNN: oneDNN found);
//   blas_whole                   sgemm_ of the BLAS found (MARGINLOSS_BENCH_BLAS); no tiled
//                                form: a threaded BLAS called from every OpenMP thread at once
//                                would run threads x BLAS threads.
#if defined(MARGINLOSS_BENCH_BLAS)
// The Fortran BLAS entry point (column-major), declared as Eigen's misc/blas.h does.
extern "C" int sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                      const int*, const float*, const int*, const float*, float*, const int*);
// Row-major C (m x n) = op(A) op(B) + beta C is column-major C^T = op(B)^T op(A)^T + beta C^T.
inline void blas_rowmajor(char ta, char tb, ml::Index m, ml::Index n, ml::Index k, const float* a, ml::Index lda,
                          const float* b, ml::Index ldb, float beta, float* c, ml::Index ldc) {
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(ldc);
  const float one = 1.f;
  sgemm_(&tb, &ta, &M, &N, &K, &one, b, &LDA, a, &LDB, &beta, c, &LDC);
}
#endif

struct Formulation {
  std::string key, library;
};

struct Products {
  Mat xhat, G, K, Kt, dX, dW;
  std::vector<Mat> dx_part;  // threads - 1 partial dX (tiled)
  std::vector<Formulation> forms;
  explicit Products(const Shape& s, const Inputs& in) {
    xhat = in.X.rowwise().normalized();
    // G: anything of the right size; its values do not change the cost of a product.
    G = Mat::Constant(s.B, s.C, 1e-4f);
    K.resize(s.B, s.C);
    Kt.resize(s.B, s.C);
    dX.resize(s.B, s.D);
    dW.resize(s.C, s.D);
    const int threads = ml::detail::max_threads();
    for (int t = 1; t < threads; ++t) dx_part.emplace_back(s.B, s.D);
#if defined(EIGEN_USE_BLAS)
    const char* eigen = "BLAS via Eigen";
#else
    const char* eigen = "Eigen";
#endif
    forms.push_back({"eigen_whole", eigen});
    forms.push_back({"eigen_tiled", eigen});
#if defined(MARGINLOSS_BENCH_ONEDNN)
    forms.push_back({"onednn_whole", "oneDNN"});
    forms.push_back({"onednn_tiled", "oneDNN"});
#endif
#if defined(MARGINLOSS_BENCH_BLAS)
    forms.push_back({"blas_whole", "BLAS"});
#endif
  }
  void k(const Mat& W) { K.noalias() = xhat * W.transpose(); }
  void dx(const Mat& W) { dX.noalias() = G * W; }
  void dw() { dW.noalias() = G.transpose() * xhat; }
  void run(std::size_t form, const Mat& W) {
    const std::string& key = forms[form].key;
    if (key == "eigen_whole") {
      k(W);
      dx(W);
      dw();
    } else if (key == "eigen_tiled") {
      tiled(W, [](auto& K_, const auto& X_, const auto& W_) { K_.noalias() = X_ * W_.transpose(); },
            [](auto& dx_, const auto& K_, const auto& W_) { dx_.noalias() += K_ * W_; },
            [](auto& dW_, const auto& K_, const auto& X_) { dW_.noalias() = K_.transpose() * X_; });
    }
#if defined(MARGINLOSS_BENCH_ONEDNN)
    else if (key == "onednn_whole") {
      const ml::Index B = xhat.rows(), D = xhat.cols(), C = W.rows();
      dnnl_sgemm('N', 'T', B, C, D, 1.f, xhat.data(), D, W.data(), D, 0.f, K.data(), C);
      dnnl_sgemm('N', 'N', B, D, C, 1.f, G.data(), C, W.data(), D, 0.f, dX.data(), D);
      dnnl_sgemm('T', 'N', C, D, B, 1.f, G.data(), C, xhat.data(), D, 0.f, dW.data(), D);
    } else if (key == "onednn_tiled") {
      tiled(W,
            [](auto& K_, const auto& X_, const auto& W_) {
              dnnl_sgemm('N', 'T', K_.rows(), K_.cols(), X_.cols(), 1.f, X_.data(), X_.outerStride(), W_.data(),
                         W_.outerStride(), 0.f, K_.data(), K_.outerStride());
            },
            [](auto& dx_, const auto& K_, const auto& W_) {
              dnnl_sgemm('N', 'N', dx_.rows(), dx_.cols(), K_.cols(), 1.f, K_.data(), K_.outerStride(), W_.data(),
                         W_.outerStride(), 1.f, dx_.data(), dx_.outerStride());
            },
            [](auto& dW_, const auto& K_, const auto& X_) {
              dnnl_sgemm('T', 'N', dW_.rows(), dW_.cols(), K_.rows(), 1.f, K_.data(), K_.outerStride(), X_.data(),
                         X_.outerStride(), 0.f, dW_.data(), dW_.outerStride());
            });
    }
#endif
#if defined(MARGINLOSS_BENCH_BLAS)
    else if (key == "blas_whole") {
      const ml::Index B = xhat.rows(), D = xhat.cols(), C = W.rows();
      blas_rowmajor('N', 'T', B, C, D, xhat.data(), D, W.data(), D, 0.f, K.data(), C);
      blas_rowmajor('N', 'N', B, D, C, G.data(), C, W.data(), D, 0.f, dX.data(), D);
      blas_rowmajor('T', 'N', C, D, B, G.data(), C, xhat.data(), D, 0.f, dW.data(), D);
    }
#endif
  }
  // The engine's tiles: product_k(K_tile, X^, W_tile), add_dx(dx_part, K_tile, W_tile),
  // product_dw(dW_tile, K_tile, X^), each called single-threaded inside the tiles' region.
  template <typename PK, typename PX, typename PW>
  void tiled(const Mat& W, PK product_k, PX add_dx, PW product_dw) {
    const ml::Index C = W.rows(), B = xhat.rows(), D = xhat.cols(), tile = ml::Workspace<float>::tile_for_block(C);
    const ml::Index ntiles = (C + tile - 1) / tile;
    const int threads = ml::detail::max_threads();
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
      ml::detail::serial_nested_regions();
      const int tid = ml::detail::thread_index();
      Mat& part = tid == 0 ? dX : dx_part[static_cast<std::size_t>(tid - 1)];
      part.setZero();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (ml::Index t = 0; t < ntiles; ++t) {
        const ml::Index j0 = t * tile, n = std::min(tile, C - j0);
        Eigen::Map<Mat> Ktile(Kt.data() + B * j0, B, n);
        const Eigen::Map<const Mat> Wtile(W.data() + D * j0, n, D);
        Eigen::Map<Mat> dWtile(dW.data() + D * j0, n, D);
        product_k(Ktile, xhat, Wtile);
        add_dx(part, Ktile, Wtile);
        product_dw(dWtile, Ktile, xhat);
      }
    }
    for (int t = 1; t < threads; ++t) dX += dx_part[static_cast<std::size_t>(t - 1)];
  }
  void keep() {
    benchmark::DoNotOptimize(K.data());
    benchmark::DoNotOptimize(Kt.data());
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

// One forward_backward() call and every formulation of the products per iteration, in an order
// that rotates between iterations; with a chunked `options` (class_block > 0), also the dense
// call, for the chunked / dense ratio.
template <typename Policy>
void BM_loss(benchmark::State& state, Policy policy, Shape s, ml::Options options) {
  const Inputs& in = inputs_for(s);
  Mat dX(s.B, s.D), dW(s.C, s.D), dX_dense(s.B, s.D), dW_dense(s.C, s.D);
  ml::Workspace<float> ws, ws_dense;
  Products prod(s, in);
  const bool chunked = options.class_block > 0;
  const std::size_t nforms = prod.forms.size();
  // Parts: 0 the loss, 1 .. nforms the formulations, then the dense loss (chunked only).
  const std::size_t nparts = 1 + nforms + (chunked ? 1 : 0);
  // Steady state: the workspaces are sized, the pages touched and every library warmed up.
  float loss = ml::forward_backward(policy, in.X, in.W, in.labels, {dX, dW}, ws, options);
  if (chunked) ml::forward_backward(policy, in.X, in.W, in.labels, {dX_dense, dW_dense}, ws_dense);
  for (std::size_t f = 0; f < nforms; ++f) prod.run(f, in.W);

  std::vector<std::vector<double>> t(nparts);
  std::vector<std::vector<double>> ratio_to(nforms);
  std::vector<double> ratio, ratio_dense;
  std::size_t rotation = 0;
  for (auto _ : state) {
    std::vector<double> dt(nparts, 0.0);
    for (std::size_t k = 0; k < nparts; ++k) {
      const std::size_t part = (k + rotation) % nparts;
      const auto t0 = Clock::now();
      if (part == 0) {
        loss = ml::forward_backward(policy, in.X, in.W, in.labels, {dX, dW}, ws, options);
        benchmark::DoNotOptimize(loss);
        benchmark::DoNotOptimize(dX.data());
        benchmark::DoNotOptimize(dW.data());
        benchmark::ClobberMemory();
      } else if (part <= nforms) {
        prod.run(part - 1, in.W);
        prod.keep();
        if (prod.forms[part - 1].key == "blas_whole") {
          // OpenBLAS's pthreads workers spin for about 2^28 cycles (its THREAD_TIMEOUT, ~0.1 s)
          // after a call; left spinning they take a core from whatever part runs next (measured
          // at 256 x 512 x 100k: loss / products 1.16 instead of 1.04-1.09). Let them go idle,
          // outside the timed part.
          dt[part] = seconds_since(t0);
          std::this_thread::sleep_for(std::chrono::milliseconds(150));
          continue;
        }
      } else {
        benchmark::DoNotOptimize(ml::forward_backward(policy, in.X, in.W, in.labels, {dX_dense, dW_dense}, ws_dense));
        benchmark::ClobberMemory();
      }
      dt[part] = seconds_since(t0);
    }
    rotation = (rotation + 1) % nparts;
    state.SetIterationTime(dt[0]);
    for (std::size_t p = 0; p < nparts; ++p) t[p].push_back(dt[p]);
    double fastest = dt[1];
    for (std::size_t f = 0; f < nforms; ++f) {
      fastest = std::min(fastest, dt[1 + f]);
      ratio_to[f].push_back(dt[0] / dt[1 + f]);
    }
    ratio.push_back(dt[0] / fastest);
    if (chunked) ratio_dense.push_back(dt[0] / dt[nparts - 1]);
  }
  const double ml_s = median(t[0]);
  double mp_s = 0;
  std::size_t fastest_form = 0;
  set_shape_counters(state, s);
  for (std::size_t f = 0; f < nforms; ++f) {
    const double m = median(t[1 + f]);
    if (f == 0 || m < mp_s) mp_s = m, fastest_form = f;
    state.counters[prod.forms[f].key + "_ms"] = 1e3 * m;
    state.counters["ratio_" + prod.forms[f].key] = median(ratio_to[f]);
  }
  state.counters["loss_ms"] = 1e3 * ml_s;
  state.counters["prod_ms"] = 1e3 * mp_s;
  state.counters["fastest"] = static_cast<double>(fastest_form);  // index into the context's "formulations"
  state.counters["GFLOPs"] = flops_of(s) / ml_s * 1e-9;
  state.counters["prod_GFLOPs"] = flops_of(s) / mp_s * 1e-9;
  state.counters["ratio"] = median(ratio);
  if (chunked) {
    state.counters["class_block"] = static_cast<double>(options.class_block);
    state.counters["dense_ms"] = 1e3 * median(t[nparts - 1]);
    state.counters["ratio_dense"] = median(ratio_dense);
  }
  state.counters["loss"] = static_cast<double>(loss);
}

// The three products alone (which = 1: K; 2: dX; 3: dW, Eigen's whole products), or one
// formulation (form >= 0) of all three.
void BM_products(benchmark::State& state, int which, int form, Shape s) {
  const Inputs& in = inputs_for(s);
  Products prod(s, in);
  if (form >= 0) prod.run(static_cast<std::size_t>(form), in.W);
  prod.k(in.W);
  prod.dx(in.W);
  prod.dw();
  std::vector<double> t;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    switch (which) {
      case 1: prod.k(in.W); break;
      case 2: prod.dx(in.W); break;
      case 3: prod.dw(); break;
      default: prod.run(static_cast<std::size_t>(form), in.W);
    }
    prod.keep();
    const double dt = seconds_since(t0);
    state.SetIterationTime(dt);
    t.push_back(dt);
  }
  const double m = median(t);
  set_shape_counters(state, s);
  const double f = which == 0 ? flops_of(s) : flops_of(s) / 3.0;
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
                                 [policy, s](benchmark::State& st) { BM_loss(st, policy, s, ml::Options{}); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

// Chunked: blocks of 8192 classes, the automatic block of the CPU (kCpuBlockBytes = 8 MiB of
// B x block floats at B = 256) when the dense buffer exceeds Options::memory_budget.
template <typename Policy>
void register_chunked(const char* name, Policy policy) {
  const Shape s{256, 512, 100000};
  ml::Options o;
  o.class_block = 8192;
  benchmark::RegisterBenchmark((std::string("loss_chunked/") + name + "/" + shape_name(s)).c_str(),
                               [policy, s, o](benchmark::State& st) { BM_loss(st, policy, s, o); })
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

void register_products() {
  const char* names[] = {"K=XhWt", "dX=GW", "dW=GtXh"};
  const std::vector<Formulation> forms = Products(Shape{1, 1, 1}, inputs_for(Shape{1, 1, 1})).forms;
  for (const Shape& s : kShapes) {
    for (std::size_t f = 0; f < forms.size(); ++f)
      benchmark::RegisterBenchmark((std::string("products/") + forms[f].key + "/" + shape_name(s)).c_str(),
                                   [f, s](benchmark::State& st) { BM_products(st, 0, static_cast<int>(f), s); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    for (int which = 1; which <= 3; ++which)
      benchmark::RegisterBenchmark((std::string(names[which - 1]) + "/" + shape_name(s)).c_str(),
                                   [which, s](benchmark::State& st) { BM_products(st, which, -1, s); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_products();
  register_loss("NormFace", ml::NormFace<float>{});
  register_loss("CosFace", ml::CosFace<float>{});
  register_loss("ArcFace", ml::ArcFace<float>{});
  register_loss("CombinedMargin", ml::CombinedMargin<float>{});
  register_loss("SphereFace", ml::SphereFace<float>{});
  register_chunked("CosFace", ml::CosFace<float>{});
  register_chunked("ArcFace", ml::ArcFace<float>{});
  register_chunked("SphereFace", ml::SphereFace<float>{});

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  marginloss_bench::add_context();
  {
    std::string forms;
    for (const Formulation& f : Products(Shape{1, 1, 1}, inputs_for(Shape{1, 1, 1})).forms)
      forms += (forms.empty() ? "" : ",") + f.key + ":" + f.library;
    benchmark::AddCustomContext("formulations", forms);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
