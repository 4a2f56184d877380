// The GPU side of the CUDA tests (see gpu_runner.hpp): runs the CUDA backend on host problems
// and returns plain host vectors. Every policy type used by test_cuda.cpp is instantiated at
// the end of this file.
#include "gpu_runner.hpp"
#include "../thread_barrier.hpp"

#include <marginloss/cuda/cuda.cuh>

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>

namespace mlcuda_test {

namespace ml = marginloss;
namespace mc = marginloss::cuda;

namespace {

// Device memory for one test run (tests may allocate; the library never does).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0) MARGINLOSS_CUDA_CHECK(cudaMalloc(&data_, bytes_));
  }
  ~DeviceBuffer() {
    if (data_) (void)cudaFree(data_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

class Stream {
 public:
  Stream() { MARGINLOSS_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() { (void)cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class Cublas {
 public:
  Cublas() { MARGINLOSS_CUBLAS_CHECK(cublasCreate(&h_)); }
  ~Cublas() { (void)cublasDestroy(h_); }
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

template <typename T>
void upload(T* device, const std::vector<T>& host, cudaStream_t stream) {
  if (host.empty()) return;
  MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(device, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice, stream));
  MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream));
}

template <typename T>
std::vector<T> download(const T* device, std::size_t n, cudaStream_t stream) {
  std::vector<T> host(n);
  if (n == 0) return host;
  MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(host.data(), device, sizeof(T) * n, cudaMemcpyDeviceToHost, stream));
  MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// rows x cols in a buffer with leading dimension ld, the padding set to `pad_value`.
template <typename T>
std::vector<T> padded(const T* rows_data, Index rows, Index cols, Index ld, T pad_value) {
  std::vector<T> out(static_cast<std::size_t>(rows * ld), pad_value);
  for (Index i = 0; i < rows; ++i)
    for (Index k = 0; k < cols; ++k) out[static_cast<std::size_t>(i * ld + k)] = rows_data[i * cols + k];
  return out;
}

template <typename T>
std::vector<T> unpadded(const std::vector<T>& in, Index rows, Index cols, Index ld, T guard, bool& guards_intact) {
  std::vector<T> out(static_cast<std::size_t>(rows * cols));
  for (Index i = 0; i < rows; ++i) {
    for (Index k = 0; k < cols; ++k) out[static_cast<std::size_t>(i * cols + k)] = in[static_cast<std::size_t>(i * ld + k)];
    for (Index k = cols; k < ld; ++k)
      if (std::memcmp(&in[static_cast<std::size_t>(i * ld + k)], &guard, sizeof(T)) != 0) guards_intact = false;
  }
  return out;
}

template <typename L>
std::vector<L> labels_as(const std::vector<std::int64_t>& labels) {
  std::vector<L> out(labels.size());
  for (std::size_t i = 0; i < labels.size(); ++i) out[i] = static_cast<L>(labels[i]);
  return out;
}

// Inputs of one problem on the device: X and W padded with NaN (never read), dX and dW padded
// with a guard value (never written), labels in both integer types.
template <typename T>
struct DeviceProblem {
  Index B, D, C, ld;
  DeviceBuffer X, W, dX, dW, labels32, labels64;
  T guard = T(-12345.25);

  DeviceProblem(const Problem<T>& p, Index pad, cudaStream_t stream)
      : B(p.B), D(p.D), C(p.C), ld(p.D + pad),
        X(sizeof(T) * static_cast<std::size_t>(p.B * (p.D + pad))),
        W(sizeof(T) * static_cast<std::size_t>(p.C * (p.D + pad))),
        dX(sizeof(T) * static_cast<std::size_t>(p.B * (p.D + pad))),
        dW(sizeof(T) * static_cast<std::size_t>(p.C * (p.D + pad))),
        labels32(sizeof(std::int32_t) * p.labels.size()),
        labels64(sizeof(std::int64_t) * p.labels.size()) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    upload(X.get<T>(), padded(p.X.data(), B, D, ld, nan), stream);
    upload(W.get<T>(), padded(p.W.data(), C, D, ld, nan), stream);
    const std::vector<T> zeros_x(static_cast<std::size_t>(B * D), T(0)), zeros_w(static_cast<std::size_t>(C * D), T(0));
    upload(dX.get<T>(), padded(zeros_x.data(), B, D, ld, guard), stream);
    upload(dW.get<T>(), padded(zeros_w.data(), C, D, ld, guard), stream);
    upload(labels32.get<std::int32_t>(), labels_as<std::int32_t>(p.labels), stream);
    upload(labels64.get<std::int64_t>(), labels_as<std::int64_t>(p.labels), stream);
  }
  mc::DeviceMatrix<const T> x() const { return {X.get<T>(), B, D, ld}; }
  mc::DeviceMatrix<const T> w() const { return {W.get<T>(), C, D, ld}; }
  mc::DeviceMatrix<T> dx() const { return {dX.get<T>(), B, D, ld}; }
  mc::DeviceMatrix<T> dw() const { return {dW.get<T>(), C, D, ld}; }

  void read_gradients(Result<T>& r, cudaStream_t stream) const {
    r.dX = unpadded(download(dX.get<T>(), static_cast<std::size_t>(B * ld), stream), B, D, ld, guard, r.guards_intact);
    r.dW = unpadded(download(dW.get<T>(), static_cast<std::size_t>(C * ld), stream), C, D, ld, guard, r.guards_intact);
  }
};

// A copy of the policy for the device: per-class margins (a view of host memory, as the CPU
// reference uses them) copied to device memory and the copy's view re-pointed at them.
template <typename P>
struct DevicePolicy {
  using T = typename P::value_type;
  static constexpr bool per_class = ml::detail::has_class_values<P>::value;
  static constexpr bool learnable = ml::detail::has_learnable_margins<P>::value;
  P policy;
  Index classes = 0;
  std::unique_ptr<DeviceBuffer> margins, dmargins;

  DevicePolicy(const P& host, cudaStream_t stream) : policy(host) {
    if constexpr (per_class) {
      const auto view = host.class_values();
      classes = view.size;
      std::vector<T> values(view.data, view.data + view.size);
      margins = std::make_unique<DeviceBuffer>(sizeof(T) * values.size());
      upload(margins->template get<T>(), values, stream);
      policy.margins = ml::ClassValues<T>(margins->template get<T>(), view.size);
      if constexpr (learnable) dmargins = std::make_unique<DeviceBuffer>(sizeof(T) * values.size());
    }
  }
  T* dm() const { return dmargins ? dmargins->template get<T>() : nullptr; }
  // Sets margin k of the device copy (the fault tests).
  void set_margin(Index k, T value, cudaStream_t stream) {
    MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(margins->template get<T>() + k, &value, sizeof(T), cudaMemcpyHostToDevice, stream));
    MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  std::vector<T> read_dmargins(cudaStream_t stream) const {
    return dmargins ? download(dmargins->template get<T>(), static_cast<std::size_t>(classes), stream) : std::vector<T>{};
  }
};

template <typename P, typename L, typename T = typename P::value_type>
T run_with_labels(const DevicePolicy<P>& dpol, const DeviceProblem<T>& dp, const L* labels, const RunOptions& o,
                  mc::Workspace<T>& ws, cudaStream_t stream, cublasHandle_t cublas) {
  const P& policy = dpol.policy;
  mc::Options opts;
  opts.class_block = o.class_block;
  if (o.async) {
    DeviceBuffer scalars(2 * sizeof(T));
    const std::vector<T> grad{static_cast<T>(o.grad_loss), T(0)};
    upload(scalars.get<T>(), grad, stream);
    T* d_grad = scalars.get<T>();
    T* d_loss = scalars.get<T>() + 1;
    mc::forward_async(policy, dp.x(), dp.w(), labels, ws, d_loss, stream, cublas, opts);
    if constexpr (DevicePolicy<P>::learnable)
      mc::backward_async(policy, dp.w(), ws, d_grad, dp.dx(), dp.dw(), dpol.dm(), stream, cublas);
    else
      mc::backward_async(policy, dp.w(), ws, d_grad, dp.dx(), dp.dw(), stream, cublas);
    mc::check_errors(ws, stream);
    return download(d_loss, 1, stream)[0];
  }
  if (o.split) {
    const T loss = mc::forward(policy, dp.x(), dp.w(), labels, ws, stream, cublas, opts);
    if constexpr (DevicePolicy<P>::learnable)
      mc::backward(policy, dp.w(), ws, static_cast<T>(o.grad_loss), dp.dx(), dp.dw(), dpol.dm(), stream, cublas);
    else
      mc::backward(policy, dp.w(), ws, static_cast<T>(o.grad_loss), dp.dx(), dp.dw(), stream, cublas);
    return loss;
  }
  if constexpr (DevicePolicy<P>::learnable)
    return mc::forward_backward(policy, dp.x(), dp.w(), labels, dp.dx(), dp.dw(), dpol.dm(), ws, stream, cublas, opts);
  else
    return mc::forward_backward(policy, dp.x(), dp.w(), labels, dp.dx(), dp.dw(), ws, stream, cublas, opts);
}

// In-process ranks on one GPU: each all-reduce copies the rank's device buffer to the host,
// combines all ranks' values in rank order (in double) and copies the result back, so every
// rank gets the same bits. A model of NCCL for the sharded engine's tests.
class HostGroup {
 public:
  explicit HostGroup(int size) : size_(size), sync_(size), slots_(static_cast<std::size_t>(size)) {}

  class Comm {
   public:
    Comm(HostGroup& g, int rank, cudaStream_t stream) : g_(g), rank_(rank), stream_(stream) {}
    int rank() const { return rank_; }
    int size() const { return g_.size_; }
    cudaStream_t stream() const { return stream_; }
    template <typename T>
    void allreduce_sum(T* data, Index n) {
      reduce(data, n, false);
    }
    template <typename T>
    void allreduce_max(T* data, Index n) {
      reduce(data, n, true);
    }
    double count_failures(bool failed) {
      std::vector<double> v{failed ? 1.0 : 0.0};
      combine(v, false);
      return v[0];
    }

   private:
    template <typename T>
    void reduce(T* data, Index n, bool max) {
      const std::vector<T> mine = download(data, static_cast<std::size_t>(n), stream_);
      std::vector<double> v(mine.begin(), mine.end());
      combine(v, max);
      const std::vector<T> out(v.begin(), v.end());
      upload(data, out, stream_);
    }
    void combine(std::vector<double>& v, bool max) {
      g_.slots_[static_cast<std::size_t>(rank_)] = v;
      g_.sync_.arrive_and_wait();
      for (std::size_t k = 0; k < v.size(); ++k) {
        double acc = g_.slots_[0][k];
        for (int r = 1; r < g_.size_; ++r) {
          const double x = g_.slots_[static_cast<std::size_t>(r)][k];
          acc = max ? (x > acc ? x : acc) : acc + x;
        }
        v[k] = acc;
      }
      g_.sync_.arrive_and_wait();
    }
    HostGroup& g_;
    int rank_;
    cudaStream_t stream_;
  };

 private:
  int size_;
  mltest::Barrier sync_;
  std::vector<std::vector<double>> slots_;
};

}  // namespace

bool cuda_device_available(std::string& why) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    why = std::string("cudaGetDeviceCount: ") + cudaGetErrorName(status) + ": " + cudaGetErrorString(status);
    (void)cudaGetLastError();
    return false;
  }
  if (count == 0) {
    why = "cudaGetDeviceCount: 0 devices";
    return false;
  }
  return true;
}

template <typename P>
Result<typename P::value_type> run_gpu(const P& policy, const Problem<typename P::value_type>& problem,
                                       const RunOptions& options) {
  using T = typename P::value_type;
  Stream stream;
  Cublas cublas;
  const DeviceProblem<T> dp(problem, options.pad, stream.get());
  const DevicePolicy<P> dpol(policy, stream.get());
  mc::Options opts;
  opts.class_block = options.class_block;
  // The workspace starts 8 bytes past an allocation's start: the library aligns it itself.
  const std::size_t bytes = mc::workspace_bytes<T>(problem.B, problem.D, problem.C, opts);
  DeviceBuffer memory(bytes + 8);
  mc::Workspace<T> ws(memory.get<char>() + 8, bytes);
  Result<T> r;
  r.loss = options.int64_labels
               ? run_with_labels(dpol, dp, dp.labels64.template get<std::int64_t>(), options, ws, stream.get(), cublas.get())
               : run_with_labels(dpol, dp, dp.labels32.template get<std::int32_t>(), options, ws, stream.get(), cublas.get());
  r.class_block = ws.class_block();
  dp.read_gradients(r, stream.get());
  r.dmargins = dpol.read_dmargins(stream.get());
  return r;
}

template <typename P>
Result<typename P::value_type> run_gpu_updating(P& policy, const Problem<typename P::value_type>& problem,
                                                Index class_block) {
  using T = typename P::value_type;
  Stream stream;
  Cublas cublas;
  const DeviceProblem<T> dp(problem, 0, stream.get());
  DevicePolicy<P> dpol(policy, stream.get());
  mc::Options opts;
  opts.class_block = class_block;
  const std::size_t bytes = mc::workspace_bytes<T>(problem.B, problem.D, problem.C, opts);
  DeviceBuffer memory(bytes);
  mc::Workspace<T> ws(memory.get(), bytes);
  Result<T> r;
  r.loss = mc::forward_backward(dpol.policy, dp.x(), dp.w(), dp.labels64.template get<std::int64_t>(), dp.dx(), dp.dw(),
                                ws, stream.get(), cublas.get(), opts);
  dp.read_gradients(r, stream.get());
  if constexpr (DevicePolicy<P>::per_class) {
    const auto view = policy.margins;
    policy = dpol.policy;
    policy.margins = view;
  } else {
    policy = dpol.policy;
  }
  return r;
}

template <typename P>
std::vector<Result<typename P::value_type>> run_gpu_sharded(const P& policy, const Problem<typename P::value_type>& problem,
                                                            int ranks, Index class_block) {
  using T = typename P::value_type;
  HostGroup group(ranks);
  std::vector<Result<T>> results(static_cast<std::size_t>(ranks));
  std::vector<T> dW_full(problem.W.size(), T(0));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        Stream stream;
        Cublas cublas;
        HostGroup::Comm comm(group, r, stream.get());
        const auto range = ml::even_class_range(problem.C, comm.size(), comm.rank());
        Problem<T> shard = problem;
        shard.C = range.count;
        shard.W.assign(problem.W.begin() + range.offset * problem.D, problem.W.begin() + (range.offset + range.count) * problem.D);
        const DeviceProblem<T> dp(shard, 0, stream.get());
        const DevicePolicy<P> dpol(policy, stream.get());
        mc::Options opts;
        opts.class_block = class_block;
        const std::size_t bytes = mc::sharded_workspace_bytes<T>(problem.B, problem.D, range.count, opts);
        DeviceBuffer memory(bytes);
        mc::Workspace<T> ws(memory.get(), bytes);
        Result<T>& out = results[static_cast<std::size_t>(r)];
        out.loss = mc::sharded_forward_backward(dpol.policy, dp.x(), dp.w(), range.offset, problem.C,
                                                dp.labels64.template get<std::int64_t>(), comm, dp.dx(), dp.dw(), ws,
                                                cublas.get(), opts);
        out.class_block = ws.class_block();
        dp.read_gradients(out, stream.get());
        std::copy(out.dW.begin(), out.dW.end(), dW_full.begin() + range.offset * problem.D);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  for (auto& r : results) r.dW = dW_full;
  return results;
}

std::vector<std::string> run_gpu_sharded_bad_shard() {
  const Index B = 4, D = 5, C = 8;
  Problem<float> problem;
  problem.B = B;
  problem.D = D;
  problem.C = C;
  for (Index k = 0; k < B * D; ++k) problem.X.push_back(static_cast<float>((k * 7) % 11) - 4.5f);
  for (Index k = 0; k < C * D; ++k) problem.W.push_back(static_cast<float>((k * 5) % 13) - 6.25f);
  problem.labels = {0, 3, 5, 7};
  HostGroup group(2);
  std::vector<std::string> messages(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      try {
        Stream stream;
        Cublas cublas;
        HostGroup::Comm comm(group, r, stream.get());
        const auto range = ml::even_class_range(C, 2, r);
        Problem<float> shard = problem;
        shard.C = range.count;
        shard.W.assign(problem.W.begin() + range.offset * D, problem.W.begin() + (range.offset + range.count) * D);
        if (r == 1) shard.W[0] = std::numeric_limits<float>::quiet_NaN();
        const DeviceProblem<float> dp(shard, 0, stream.get());
        const std::size_t bytes = mc::sharded_workspace_bytes<float>(B, D, range.count);
        DeviceBuffer memory(bytes);
        mc::Workspace<float> ws(memory.get(), bytes);
        mc::sharded_forward_backward(ml::CosFace<float>{}, dp.x(), dp.w(), range.offset, C,
                                     dp.labels32.get<std::int32_t>(), comm, dp.dx(), dp.dw(), ws, cublas.get());
      } catch (const std::exception& e) {
        messages[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return messages;
}

// What `call` threw, if anything: the outcome the error tests compare against the CPU's.
template <typename F>
Error capture_error(F&& call) {
  Error e;
  try {
    call();
  } catch (const ml::invalid_argument& ex) {
    e.thrown = true;
    e.invalid_argument = true;
    e.message = ex.what();
  } catch (const std::exception& ex) {
    e.thrown = true;
    e.message = ex.what();
  }
  return e;
}

template <typename P>
Error run_gpu_error(const P& policy, const Problem<typename P::value_type>& problem_in, DeviceFault fault) {
  using T = typename P::value_type;
  Problem<T> problem = problem_in;
  const Index D = problem.D;
  switch (fault) {
    case DeviceFault::label_too_large: problem.labels[1] = problem.C; break;
    case DeviceFault::label_negative: problem.labels[2] = -3; break;
    case DeviceFault::zero_x_row:
      for (Index k = 0; k < D; ++k) problem.X[static_cast<std::size_t>(2 * D + k)] = T(0);
      break;
    case DeviceFault::nan_in_x: problem.X[static_cast<std::size_t>(1 * D + 3)] = std::numeric_limits<T>::quiet_NaN(); break;
    case DeviceFault::bad_w_rows:
      problem.W[static_cast<std::size_t>(4 * D + 2)] = std::numeric_limits<T>::quiet_NaN();
      for (Index k = 0; k < D; ++k) problem.W[static_cast<std::size_t>(6 * D + k)] = T(0);
      break;
    case DeviceFault::huge_x_row:
      for (Index k = 0; k < D; ++k) problem.X[static_cast<std::size_t>(1 * D + k)] *= T(1e31);
      break;
    case DeviceFault::async_label: problem.labels[0] = problem.C; break;
    default: break;
  }
  Stream stream;
  Cublas cublas;
  const DeviceProblem<T> dp(problem, 0, stream.get());
  const std::size_t bytes = mc::workspace_bytes<T>(problem.B, problem.D, problem.C);
  DeviceBuffer memory(bytes);
  mc::Workspace<T> ws(memory.get(), bytes);
  const auto* labels32 = dp.labels32.template get<std::int32_t>();
  const auto* labels64 = dp.labels64.template get<std::int64_t>();
  return capture_error([&] {
    switch (fault) {
      case DeviceFault::label_negative:
        mc::forward_backward(policy, dp.x(), dp.w(), labels64, dp.dx(), dp.dw(), ws, stream.get(), cublas.get());
        break;
      case DeviceFault::async_label: {
        DeviceBuffer loss(sizeof(T));
        mc::forward_async(policy, dp.x(), dp.w(), labels32, ws, loss.get<T>(), stream.get(), cublas.get());
        // Nothing may be thrown before the check.
        try {
          mc::backward_async(policy, dp.w(), ws, static_cast<const T*>(nullptr), dp.dx(), dp.dw(), stream.get(), cublas.get());
        } catch (const std::exception& early) {
          throw std::runtime_error(std::string("thrown before check_errors(): ") + early.what());
        }
        mc::check_errors(ws, stream.get());
        break;
      }
      case DeviceFault::unchecked_async: {
        std::vector<std::int32_t> bad = labels_as<std::int32_t>(problem.labels);
        bad[0] = static_cast<std::int32_t>(problem.C);
        DeviceBuffer bad_labels(sizeof(std::int32_t) * bad.size());
        upload(bad_labels.get<std::int32_t>(), bad, stream.get());
        mc::forward_async(policy, dp.x(), dp.w(), bad_labels.get<const std::int32_t>(), ws, static_cast<T*>(nullptr),
                          stream.get(), cublas.get());
        // The valid call reports the earlier, unchecked error (sticky until reported) ...
        try {
          mc::forward(policy, dp.x(), dp.w(), labels32, ws, stream.get(), cublas.get());
        } catch (const ml::invalid_argument&) {
          // ... once: the next valid call succeeds.
          mc::forward_backward(policy, dp.x(), dp.w(), labels32, dp.dx(), dp.dw(), ws, stream.get(), cublas.get());
          throw;
        }
        break;
      }
      case DeviceFault::nan_grad_host:
        mc::forward(policy, dp.x(), dp.w(), labels32, ws, stream.get(), cublas.get());
        mc::backward(policy, dp.w(), ws, std::numeric_limits<T>::quiet_NaN(), dp.dx(), dp.dw(), stream.get(), cublas.get());
        break;
      case DeviceFault::nan_grad_device: {
        DeviceBuffer grad(sizeof(T));
        upload(grad.get<T>(), std::vector<T>{std::numeric_limits<T>::quiet_NaN()}, stream.get());
        mc::forward(policy, dp.x(), dp.w(), labels32, ws, stream.get(), cublas.get());
        mc::backward_async(policy, dp.w(), ws, grad.get<const T>(), dp.dx(), dp.dw(), stream.get(), cublas.get());
        mc::check_errors(ws, stream.get());
        break;
      }
      case DeviceFault::backward_twice:
        mc::forward(policy, dp.x(), dp.w(), labels32, ws, stream.get(), cublas.get());
        mc::backward(policy, dp.w(), ws, T(1), dp.dx(), dp.dw(), stream.get(), cublas.get());
        mc::backward(policy, dp.w(), ws, T(1), dp.dx(), dp.dw(), stream.get(), cublas.get());
        break;
      case DeviceFault::backward_other_w: {
        mc::forward(policy, dp.x(), dp.w(), labels32, ws, stream.get(), cublas.get());
        const mc::DeviceMatrix<const T> fewer(dp.W.template get<T>(), problem.C - 1, problem.D);
        mc::backward(policy, fewer, ws, T(1), dp.dx(), dp.dw(), stream.get(), cublas.get());
        break;
      }
      case DeviceFault::dx_shape: {
        mc::forward(policy, dp.x(), dp.w(), labels32, ws, stream.get(), cublas.get());
        const mc::DeviceMatrix<T> wrong(dp.dX.template get<T>(), problem.B - 1, problem.D);
        mc::backward(policy, dp.w(), ws, T(1), wrong, dp.dw(), stream.get(), cublas.get());
        break;
      }
      default:
        mc::forward_backward(policy, dp.x(), dp.w(), labels32, dp.dx(), dp.dw(), ws, stream.get(), cublas.get());
        break;
    }
  });
}

template <typename P>
Error run_gpu_class_value_error(const P& policy, const Problem<typename P::value_type>& problem, Index k,
                                typename P::value_type value, bool async) {
  using T = typename P::value_type;
  Stream stream;
  Cublas cublas;
  const DeviceProblem<T> dp(problem, 0, stream.get());
  DevicePolicy<P> dpol(policy, stream.get());
  dpol.set_margin(k, value, stream.get());
  const std::size_t bytes = mc::workspace_bytes<T>(problem.B, problem.D, problem.C);
  DeviceBuffer memory(bytes);
  mc::Workspace<T> ws(memory.get(), bytes);
  const auto* labels = dp.labels32.template get<std::int32_t>();
  return capture_error([&] {
    if (async) {
      try {
        if constexpr (DevicePolicy<P>::learnable)
          mc::forward_backward_async(dpol.policy, dp.x(), dp.w(), labels, dp.dx(), dp.dw(), dpol.dm(), ws,
                                     static_cast<T*>(nullptr), stream.get(), cublas.get());
        else
          mc::forward_backward_async(dpol.policy, dp.x(), dp.w(), labels, dp.dx(), dp.dw(), ws, static_cast<T*>(nullptr),
                                     stream.get(), cublas.get());
      } catch (const std::exception& early) {
        throw std::runtime_error(std::string("thrown before check_errors(): ") + early.what());
      }
      mc::check_errors(ws, stream.get());
    } else if constexpr (DevicePolicy<P>::learnable) {
      mc::forward_backward(dpol.policy, dp.x(), dp.w(), labels, dp.dx(), dp.dw(), dpol.dm(), ws, stream.get(), cublas.get());
    } else {
      mc::forward_backward(dpol.policy, dp.x(), dp.w(), labels, dp.dx(), dp.dw(), ws, stream.get(), cublas.get());
    }
  });
}

Error host_error(HostFault fault) {
  // Host arrays stand in for device memory: every call below throws before touching it.
  static float x[64], w[64], dx[64], dw[64];
  static std::int32_t labels[8];
  static unsigned char memory[1 << 16];
  const Index B = 4, D = 5, C = 6;
  auto* fake_cublas = reinterpret_cast<cublasHandle_t>(&memory[0]);
  const cudaStream_t stream = nullptr;
  mc::DeviceMatrix<const float> X(x, B, D), W(w, C, D);
  const mc::DeviceMatrix<float> dX(dx, B, D), dW(dw, C, D);
  const std::size_t bytes = mc::workspace_bytes<float>(B, D, C);
  mc::Workspace<float> ws(memory, bytes);
  const ml::CosFace<float> policy{};
  mc::Options options;
  return capture_error([&] {
    switch (fault) {
      case HostFault::small_workspace: {
        mc::Workspace<float> small(memory, bytes - 256);  // less than the layout once aligned
        mc::forward_backward(policy, X, W, labels, dX, dW, small, stream, fake_cublas);
        break;
      }
      case HostFault::no_workspace: {
        mc::Workspace<float> none;
        mc::forward_backward(policy, X, W, labels, dX, dW, none, stream, fake_cublas);
        break;
      }
      case HostFault::w_columns:
        mc::forward_backward(policy, X, mc::DeviceMatrix<const float>(w, C, D + 1), labels, dX, dW, ws, stream, fake_cublas);
        break;
      case HostFault::empty_batch:
        mc::forward_backward(policy, mc::DeviceMatrix<const float>(x, 0, D), W, labels, dX, dW, ws, stream, fake_cublas);
        break;
      case HostFault::x_leading_dimension:
        mc::forward_backward(policy, mc::DeviceMatrix<const float>(x, B, D, D - 1), W, labels, dX, dW, ws, stream,
                             fake_cublas);
        break;
      case HostFault::null_labels:
        mc::forward_backward(policy, X, W, static_cast<const std::int64_t*>(nullptr), dX, dW, ws, stream, fake_cublas);
        break;
      case HostFault::null_cublas:
        mc::forward_backward(policy, X, W, labels, dX, dW, ws, stream, static_cast<cublasHandle_t>(nullptr));
        break;
      case HostFault::invalid_policy:
        mc::forward_backward(ml::CosFace<float>{-1.f}, X, W, labels, dX, dW, ws, stream, fake_cublas);
        break;
      case HostFault::negative_block:
        options.class_block = -1;
        mc::forward_backward(policy, X, W, labels, dX, dW, ws, stream, fake_cublas, options);
        break;
      case HostFault::backward_first:
        mc::backward(policy, W, ws, 1.f, dX, dW, stream, fake_cublas);
        break;
      case HostFault::shard_outside: {
        HostGroup group(1);
        HostGroup::Comm comm(group, 0, stream);
        mc::sharded_forward_backward(policy, X, mc::DeviceMatrix<const float>(w, 5, D), 3, 6, labels, comm, dX,
                                     mc::DeviceMatrix<float>(dw, 5, D), ws, fake_cublas);
        break;
      }
      case HostFault::margins_count: {
        static float margins[8], dmargins[8];
        mc::forward_backward(ml::AdaptiveMargin<float>{30, ml::ClassValues<float>(margins, 5)}, X, W, labels, dX, dW,
                             dmargins, ws, stream, fake_cublas);
        break;
      }
      case HostFault::state_const: {
        const ml::CurricularFace<float> constant{};
        mc::forward_backward(constant, X, W, labels, dX, dW, ws, stream, fake_cublas);
        break;
      }
      case HostFault::state_async: {
        ml::CurricularFace<float> updating{};
        mc::forward_async(updating, X, W, labels, ws, dx, stream, fake_cublas);
        break;
      }
      case HostFault::margins_null:
        mc::forward_backward(ml::ClassMargins<ml::CosFace<float>>{{}, ml::ClassValues<float>(nullptr, 6)}, X, W, labels,
                             dX, dW, ws, stream, fake_cublas);
        break;
    }
  });
}

template <typename T>
std::size_t workspace_bytes(Index batch, Index dim, Index classes, Index class_block, std::size_t memory_budget) {
  mc::Options o;
  o.class_block = class_block;
  o.memory_budget = memory_budget;
  return mc::workspace_bytes<T>(batch, dim, classes, o);
}

template <typename T>
std::size_t sharded_workspace_bytes(Index batch, Index dim, Index classes, Index class_block) {
  mc::Options o;
  o.class_block = class_block;
  return mc::sharded_workspace_bytes<T>(batch, dim, classes, o);
}

template <typename T>
double norm_limit_lo() {
  return ml::detail::NormRange<T>::lo;
}
template <typename T>
double norm_limit_hi() {
  return ml::detail::NormRange<T>::hi;
}

#define MLCUDA_TEST_INSTANTIATE_RUN(P)                                                                           \
  template Result<typename P::value_type> run_gpu(const P&, const Problem<typename P::value_type>&,             \
                                                  const RunOptions&);
#define MLCUDA_TEST_INSTANTIATE_SHARDED(P)                                                                       \
  template std::vector<Result<typename P::value_type>> run_gpu_sharded(const P&, const Problem<typename P::value_type>&, \
                                                                       int, Index);
#define MLCUDA_TEST_INSTANTIATE(P)   \
  MLCUDA_TEST_INSTANTIATE_RUN(P)     \
  MLCUDA_TEST_INSTANTIATE_SHARDED(P) \
  template Error run_gpu_error(const P&, const Problem<typename P::value_type>&, DeviceFault);
#define MLCUDA_TEST_INSTANTIATE_PER_CLASS(P) \
  MLCUDA_TEST_INSTANTIATE_RUN(P)             \
  template Error run_gpu_class_value_error(const P&, const Problem<typename P::value_type>&, Index, \
                                           typename P::value_type, bool);

#define MLCUDA_TEST_INSTANTIATE_ALL(T)                    \
  MLCUDA_TEST_INSTANTIATE(ml::NormFace<T>)                \
  MLCUDA_TEST_INSTANTIATE(ml::CosFace<T>)                 \
  MLCUDA_TEST_INSTANTIATE(ml::ArcFace<T>)                 \
  MLCUDA_TEST_INSTANTIATE(ml::CombinedMargin<T>)          \
  MLCUDA_TEST_INSTANTIATE(ml::SphereFace<T>)              \
  MLCUDA_TEST_INSTANTIATE(ml::SVSoftmax<T>)               \
  MLCUDA_TEST_INSTANTIATE(ml::MVSoftmax<T>)               \
  MLCUDA_TEST_INSTANTIATE(ml::CurricularFace<T>)          \
  MLCUDA_TEST_INSTANTIATE(ml::AMMSoftmax<T>)              \
  MLCUDA_TEST_INSTANTIATE_PER_CLASS(ml::AdaptiveMargin<T>) \
  MLCUDA_TEST_INSTANTIATE_PER_CLASS(ml::ClassMargins<ml::CosFace<T>>) \
  MLCUDA_TEST_INSTANTIATE_PER_CLASS(ml::ClassMargins<ml::ArcFace<T>>) \
  MLCUDA_TEST_INSTANTIATE_PER_CLASS(ml::ClassMargins<ml::MVSoftmax<T>>) \
  MLCUDA_TEST_INSTANTIATE_PER_CLASS(ml::ClassMargins<ml::CurricularFace<T>>) \
  MLCUDA_TEST_INSTANTIATE_SHARDED(ml::ClassMargins<ml::ArcFace<T>>) \
  template Result<T> run_gpu_updating(ml::CurricularFace<T>&, const Problem<T>&, Index); \
  template Result<T> run_gpu_updating(ml::ClassMargins<ml::CurricularFace<T>>&, const Problem<T>&, Index); \
  template std::size_t workspace_bytes<T>(Index, Index, Index, Index, std::size_t); \
  template std::size_t sharded_workspace_bytes<T>(Index, Index, Index, Index);      \
  template double norm_limit_lo<T>();                     \
  template double norm_limit_hi<T>();

MLCUDA_TEST_INSTANTIATE_ALL(float)
MLCUDA_TEST_INSTANTIATE_ALL(double)

}  // namespace mlcuda_test
