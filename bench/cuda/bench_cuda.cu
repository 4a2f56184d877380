// marginloss CUDA benchmark: fp32 forward + backward of each policy on the GPU against the three
// bare cuBLAS products the loss cannot avoid, in the same binary, on the same stream and handle:
//
//   K  = X^ W^T   (B x C)      dX = G W   (B x D)      dW = G^T X^   (C x D)
//
// issued exactly as the library issues them (ml::cuda::detail::gemm_cosines / gemm_dx /
// gemm_dw, same transposes and leading dimensions). Both sides are timed with CUDA events on
// the stream (the loss with forward_backward(..., ml::cuda::Async{stream, cublas}), so no host
// synchronisation sits inside the timed region). Each iteration times one loss call and one run
// of the three products, back to back, alternating which goes first; `ratio` is the median over
// iterations of loss / products of the same iteration. The benchmark's time is the loss alone
// (manual time).
//
// Counters: loss_ms, prod_ms (medians), ratio, TFLOPs = 6 B D C / loss time, prod_TFLOPs,
// ws_MiB = ml::cuda::workspace_bytes<float>(B, D, C), loss (the last loss, a sanity value).
//
//   ./marginloss_bench_cuda --benchmark_min_time=2 --benchmark_out=cuda.json --benchmark_out_format=json
//   /usr/bin/python3 bench/cuda/compare_pytorch_cuda.py cuda.json
#include <benchmark/benchmark.h>

#include <marginloss/cuda/cuda.cuh>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace ml = marginloss;
namespace mc = marginloss::cuda;

namespace {

struct Shape {
  ml::Index B, D, C;
};

const Shape kShapes[] = {{256, 512, 100000}, {512, 512, 100000}};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) { MARGINLOSS_CUDA_CHECK(cudaMalloc(&p_, bytes > 0 ? bytes : 1)); }
  ~DeviceBuffer() { (void)cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

// Everything one shape needs on the device, made once per process.
struct Bench {
  Shape s;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  DeviceBuffer X, W, labels, dX, dW, workspace;
  // Per-class margins (device memory) and their gradient, for AdaptiveMargin / ClassMargins.
  DeviceBuffer margins, dmargins;
  std::size_t workspace_size;
  // The products' own buffers: X^, G (B x C), K (B x C).
  DeviceBuffer xhat, G, K, pdX, pdW;

  explicit Bench(const Shape& sh)
      : s(sh),
        X(sizeof(float) * sh.B * sh.D),
        W(sizeof(float) * sh.C * sh.D),
        labels(sizeof(std::int64_t) * sh.B),
        dX(sizeof(float) * sh.B * sh.D),
        dW(sizeof(float) * sh.C * sh.D),
        workspace(mc::workspace_bytes<float>(sh.B, sh.D, sh.C)),
        margins(sizeof(float) * sh.C),
        dmargins(sizeof(float) * sh.C),
        workspace_size(mc::workspace_bytes<float>(sh.B, sh.D, sh.C)),
        xhat(sizeof(float) * sh.B * sh.D),
        G(sizeof(float) * sh.B * sh.C),
        K(sizeof(float) * sh.B * sh.C),
        pdX(sizeof(float) * sh.B * sh.D),
        pdW(sizeof(float) * sh.C * sh.D) {
    MARGINLOSS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    MARGINLOSS_CUBLAS_CHECK(cublasCreate(&cublas));
    MARGINLOSS_CUBLAS_CHECK(cublasSetStream(cublas, stream));
    MARGINLOSS_CUDA_CHECK(cudaEventCreate(&start));
    MARGINLOSS_CUDA_CHECK(cudaEventCreate(&stop));
    std::mt19937_64 rng(0x6d61726731u + static_cast<std::uint64_t>(sh.C));
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<float> x(static_cast<std::size_t>(sh.B * sh.D)), w(static_cast<std::size_t>(sh.C * sh.D));
    for (auto& v : x) v = normal(rng);
    for (auto& v : w) v = normal(rng);
    std::uniform_int_distribution<std::int64_t> label(0, sh.C - 1);
    std::vector<std::int64_t> y(static_cast<std::size_t>(sh.B));
    for (auto& v : y) v = label(rng);
    std::vector<float> m(static_cast<std::size_t>(sh.C));
    std::uniform_real_distribution<float> uniform(0.3f, 0.4f);  // FaceX-Zoo's initialisation
    for (auto& v : m) v = uniform(rng);
    MARGINLOSS_CUDA_CHECK(cudaMemcpy(margins.as<float>(), m.data(), sizeof(float) * m.size(), cudaMemcpyHostToDevice));
    // G: anything of the right size; its values do not change a product's cost.
    std::vector<float> g(static_cast<std::size_t>(sh.B * sh.C), 1e-4f);
    MARGINLOSS_CUDA_CHECK(cudaMemcpy(X.as<float>(), x.data(), sizeof(float) * x.size(), cudaMemcpyHostToDevice));
    MARGINLOSS_CUDA_CHECK(cudaMemcpy(xhat.as<float>(), x.data(), sizeof(float) * x.size(), cudaMemcpyHostToDevice));
    MARGINLOSS_CUDA_CHECK(cudaMemcpy(W.as<float>(), w.data(), sizeof(float) * w.size(), cudaMemcpyHostToDevice));
    MARGINLOSS_CUDA_CHECK(cudaMemcpy(labels.as<std::int64_t>(), y.data(), sizeof(std::int64_t) * y.size(), cudaMemcpyHostToDevice));
    MARGINLOSS_CUDA_CHECK(cudaMemcpy(G.as<float>(), g.data(), sizeof(float) * g.size(), cudaMemcpyHostToDevice));
  }
  ~Bench() {
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    (void)cublasDestroy(cublas);
    (void)cudaStreamDestroy(stream);
  }

  // The policy as registered, its per-class margins (if any) pointed at this shape's.
  template <typename P>
  P on_device(P policy) const {
    if constexpr (ml::detail::has_class_values<P>::value) policy.margins = ml::ClassValues<float>(margins.as<float>(), s.C);
    return policy;
  }

  // Enqueues one forward + backward without waiting; returns the loss's device pointer (in the
  // workspace, valid until its next forward).
  template <typename P>
  const float* loss_async(const P& registered, mc::Workspace<float>& ws) {
    const P policy = on_device(registered);
    const mc::DeviceMatrix<const float> x(X.as<float>(), s.B, s.D), w(W.as<float>(), s.C, s.D);
    const mc::DeviceMatrix<float> dx(dX.as<float>(), s.B, s.D), dw(dW.as<float>(), s.C, s.D);
    const mc::Async async{stream, cublas};
    if constexpr (ml::detail::has_learnable_margins<P>::value)
      return mc::forward_backward(policy, x, w, labels.as<std::int64_t>(), {dx, dw, dmargins.as<float>()}, ws, async);
    else
      return mc::forward_backward(policy, x, w, labels.as<std::int64_t>(), {dx, dw}, ws, async);
  }

  void products() {
    mc::detail::gemm_cosines(cublas, xhat.as<float>(), s.B, s.D, W.as<float>(), s.D, s.C, K.as<float>());
    mc::detail::gemm_dx(cublas, G.as<float>(), s.B, s.C, W.as<float>(), s.D, s.D, false, pdX.as<float>(), s.D);
    mc::detail::gemm_dw(cublas, G.as<float>(), s.B, s.C, xhat.as<float>(), s.D, pdW.as<float>(), s.D);
  }

  // Milliseconds of whatever `work` enqueues on the stream, by events.
  template <typename Work>
  double time_ms(Work&& work) {
    MARGINLOSS_CUDA_CHECK(cudaEventRecord(start, stream));
    work();
    MARGINLOSS_CUDA_CHECK(cudaEventRecord(stop, stream));
    MARGINLOSS_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    MARGINLOSS_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return static_cast<double>(ms);
  }
};

Bench& bench_for(const Shape& s) {
  static std::vector<Bench*> cache;
  for (auto* b : cache)
    if (b->s.B == s.B && b->s.D == s.D && b->s.C == s.C) return *b;
  cache.push_back(new Bench(s));  // lives for the process
  return *cache.back();
}

double flops_of(const Shape& s) { return 6.0 * static_cast<double>(s.B) * static_cast<double>(s.D) * static_cast<double>(s.C); }

void set_counters(benchmark::State& state, const Shape& s, double loss_ms, double prod_ms) {
  state.counters["B"] = static_cast<double>(s.B);
  state.counters["D"] = static_cast<double>(s.D);
  state.counters["C"] = static_cast<double>(s.C);
  state.counters["ws_MiB"] = static_cast<double>(mc::workspace_bytes<float>(s.B, s.D, s.C)) / (1024.0 * 1024.0);
  if (loss_ms > 0) {
    state.counters["loss_ms"] = loss_ms;
    state.counters["TFLOPs"] = flops_of(s) / (loss_ms * 1e-3) * 1e-12;
  }
  state.counters["prod_ms"] = prod_ms;
  state.counters["prod_TFLOPs"] = flops_of(s) / (prod_ms * 1e-3) * 1e-12;
}

template <typename Policy>
void BM_loss(benchmark::State& state, Policy policy, Shape s) {
  try {
    Bench& b = bench_for(s);
    mc::Workspace<float> ws(b.workspace.as<void>(), b.workspace_size);
    // Warm up both sides (cuBLAS heuristics, caches), and check the loss once.
    const float* d_loss = b.loss_async(policy, ws);
    mc::check_errors(ws, b.stream);
    b.products();
    MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(b.stream));
    std::vector<double> t_loss, t_prod, ratio;
    bool loss_first = true;
    for (auto _ : state) {
      double tl = 0, tp = 0;
      for (int half = 0; half < 2; ++half) {
        if ((half == 0) == loss_first)
          tl = b.time_ms([&] { d_loss = b.loss_async(policy, ws); });
        else
          tp = b.time_ms([&] { b.products(); });
      }
      loss_first = !loss_first;
      state.SetIterationTime(tl * 1e-3);
      t_loss.push_back(tl);
      t_prod.push_back(tp);
      ratio.push_back(tl / tp);
    }
    mc::check_errors(ws, b.stream);  // the timed calls' status (input errors, overflow)
    float loss = 0;
    MARGINLOSS_CUDA_CHECK(cudaMemcpy(&loss, d_loss, sizeof(float), cudaMemcpyDeviceToHost));
    set_counters(state, s, median(t_loss), median(t_prod));
    state.counters["ratio"] = median(ratio);
    state.counters["loss"] = static_cast<double>(loss);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void BM_products(benchmark::State& state, Shape s) {
  try {
    Bench& b = bench_for(s);
    b.products();
    MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(b.stream));
    std::vector<double> t;
    for (auto _ : state) {
      const double ms = b.time_ms([&] { b.products(); });
      state.SetIterationTime(ms * 1e-3);
      t.push_back(ms);
    }
    set_counters(state, s, 0, median(t));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

std::string shape_name(const Shape& s) {
  return std::to_string(s.B) + "x" + std::to_string(s.D) + "x" + std::to_string(s.C);
}

template <typename Policy>
void register_loss(const char* name, Policy policy) {
  for (const Shape& s : kShapes)
    benchmark::RegisterBenchmark((std::string("loss/") + name + "/" + shape_name(s)).c_str(), BM_loss<Policy>, policy, s)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "marginloss_bench_cuda: no CUDA device (cudaGetDeviceCount: %s): nothing to benchmark\n",
                 status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return 1;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) benchmark::AddCustomContext("cuda_device", prop.name);
  benchmark::AddCustomContext("cuda_runtime", std::to_string(CUDART_VERSION));

  register_loss("NormFace", ml::NormFace<float>{20});
  register_loss("CosFace", ml::CosFace<float>{64, 0.35f});
  register_loss("ArcFace", ml::ArcFace<float>{64, 0.5f});
  register_loss("CombinedMargin", ml::CombinedMargin<float>{});
  register_loss("SphereFace", ml::SphereFace<float>{4, 5.f});
  // tau fixed: the asynchronous calls timed here cannot update it (see loss.cuh).
  ml::CurricularFace<float> curricular{64, 0.5f, 0.3f};
  curricular.update_tau_in_forward = false;
  register_loss("CurricularFace", curricular);
  // Per-class margins: each shape's device margins replace the (empty) view at run time.
  register_loss("AdaptiveMargin", ml::AdaptiveMargin<float>{32, {}, 70.f});
  register_loss("ClassMarginsArcFace", ml::ClassMargins<ml::ArcFace<float>>{{64, 0.5f}, {}});
  for (const Shape& s : kShapes)
    benchmark::RegisterBenchmark(("products/" + shape_name(s)).c_str(), BM_products, s)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
