// The GPU side of the CUDA tests (see gpu_runner.hpp and faults.hpp): runs the CUDA backend on
// host problems and returns plain host vectors. Every entry point takes an AnyPolicy<T> and is
// instantiated at the end of this file for float and double, so for every policy type of
// policies.hpp.
#include "faults.hpp"
#include "gpu_runner.hpp"
#include "../thread_barrier.hpp"

#include <marginloss/cuda/cuda.cuh>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>

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
  // call(labels) with the labels as int64_t or int32_t.
  template <typename Call>
  decltype(auto) with_labels(bool int64, Call&& call) const {
    return int64 ? call(labels64.get<const std::int64_t>()) : call(labels32.get<const std::int32_t>());
  }

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
      if constexpr (ml::detail::has_learnable_margins<P>::value)
        dmargins = std::make_unique<DeviceBuffer>(sizeof(T) * values.size());
    }
  }
  T* dm() const { return dmargins ? dmargins->template get<T>() : nullptr; }
  std::vector<T> read_dmargins(cudaStream_t stream) const {
    return dmargins ? download(dmargins->template get<T>(), static_cast<std::size_t>(classes), stream) : std::vector<T>{};
  }
  // The device copy's state (CurricularFace's tau, after the engine updated it) into `host`,
  // whose margins view is kept.
  void copy_state_to(P& host) const {
    if constexpr (per_class) {
      const auto view = host.margins;
      host = policy;
      host.margins = view;
    } else {
      host = policy;
    }
  }
};

// One policy's entry points on one problem's buffers (device memory, or host arrays standing in
// for it in the host checks), with Gradients{dX, dW, dmargins} where the policy has learnable
// margins and Gradients{dX, dW} otherwise (flip_dmargins: the other way round, the mistake the
// calls reject). P is const (the policy as given) or not (one whose state the engine updates).
// The fault runs copy it and change one member: a workspace, a view, the cuBLAS handle, the
// options.
template <typename P>
struct Calls {
  using Policy = std::remove_const_t<P>;
  using T = typename Policy::value_type;
  static constexpr bool learnable = ml::detail::has_learnable_margins<Policy>::value;
  P& policy;
  T* dmargins;  // C entries when learnable (flip_dmargins: when not)
  mc::DeviceMatrix<const T> X, W;
  mc::DeviceMatrix<T> dX, dW;
  mc::Workspace<T>* ws;
  cudaStream_t stream;
  cublasHandle_t cublas;
  mc::Options options;
  bool flip_dmargins = false;

  mc::Execution sync() const { return {stream, cublas}; }
  mc::Async async() const { return {stream, cublas}; }
  mc::Gradients<T> gradients() const { return {dX, dW, learnable != flip_dmargins ? dmargins : nullptr}; }

  // exec: mc::Execution or mc::Async; shard: none, or one ml::Shard.
  template <typename E, typename L, typename... Shard>
  auto forward(const E& exec, const L* labels, Shard... shard) const {
    return mc::forward(policy, X, W, labels, *ws, exec, shard..., options);
  }
  template <typename L>
  auto forward(const L* labels) const {
    return forward(sync(), labels);
  }
  template <typename E, typename L, typename... Shard>
  auto forward_backward(const E& exec, const L* labels, Shard... shard) const {
    return mc::forward_backward(policy, X, W, labels, gradients(), *ws, exec, shard..., options);
  }
  template <typename L>
  T forward_backward(const L* labels) const {
    return forward_backward(sync(), labels);
  }
  // grad_loss: a host value or a device pointer.
  template <typename F, typename G>
  void backward(const F& fwd, G grad_loss) const {
    mc::backward(fwd, grad_loss, gradients());
  }
  void check_errors() const { mc::check_errors(*ws, stream); }
  // The same buffers with another policy object.
  template <typename Q>
  Calls<Q> with_policy(Q& other) const {
    return {other, dmargins, X, W, dX, dW, ws, stream, cublas, options, flip_dmargins};
  }
};

// The calls of a DevicePolicy (const: the policy as given; else modifiable) on a DeviceProblem.
template <typename DP, typename T>
auto device_calls(DP& dpol, const DeviceProblem<T>& dp, mc::Workspace<T>& ws, cudaStream_t stream, cublasHandle_t cublas,
                  const mc::Options& options = {}) {
  using P = std::remove_reference_t<decltype((dpol.policy))>;
  return Calls<P>{dpol.policy, dpol.dm(), dp.x(), dp.w(), dp.dx(), dp.dw(), &ws, stream, cublas, options};
}

// One run as the options say (RunOptions): forward_backward, split (forward, backward(grad_loss)
// on the host or, device_grad, in device memory), asynchronous split (the upstream gradient in
// device memory, check_errors, the loss from fwd.device_loss()) or asynchronous forward_backward
// (the loss from the returned pointer). shard...: none (one GPU) or this rank's ml::Shard.
// Returns the loss; r.device_loss_ok says whether the Forward's device loss was as it should be.
template <typename P, typename L, typename... Shard>
typename Calls<P>::T run_calls(const Calls<P>& calls, const L* labels, const RunOptions& o, Result<typename Calls<P>::T>& r,
                               Shard... shard) {
  using T = typename Calls<P>::T;
  DeviceBuffer grad(sizeof(T));
  upload(grad.get<T>(), std::vector<T>{static_cast<T>(o.grad_loss)}, calls.stream);
  const T* d_grad = grad.get<const T>();
  if (o.async || o.fused_async) {
    const T* d_loss = nullptr;
    if (o.fused_async) {
      d_loss = calls.forward_backward(calls.async(), labels, shard...);
    } else {
      const auto fwd = calls.forward(calls.async(), labels, shard...);
      r.device_loss_ok = r.device_loss_ok && fwd.asynchronous() && fwd.device_loss() != nullptr;
      calls.backward(fwd, d_grad);
      d_loss = fwd.device_loss();
    }
    calls.check_errors();
    if (!d_loss) throw std::runtime_error("marginloss CUDA tests: an asynchronous call gave no device loss");
    return download(d_loss, 1, calls.stream)[0];
  }
  if (o.split) {
    const auto fwd = calls.forward(calls.sync(), labels, shard...);
    const T loss = fwd.loss();
    const T on_device = fwd.device_loss() ? download(fwd.device_loss(), 1, calls.stream)[0] : T(0);
    r.device_loss_ok = r.device_loss_ok && !fwd.asynchronous() && fwd.device_loss() &&
                       std::memcmp(&on_device, &loss, sizeof(T)) == 0;
    if (o.device_grad)
      calls.backward(fwd, d_grad);
    else
      calls.backward(fwd, static_cast<T>(o.grad_loss));
    return loss;
  }
  return calls.forward_backward(calls.sync(), labels, shard...);
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

// Asynchronous calls must leave their errors to check_errors(): one thrown before is reported
// as such.
template <typename F>
void nothing_thrown_before_check(F&& calls) {
  try {
    calls();
  } catch (const std::exception& early) {
    throw std::runtime_error(std::string("thrown before check_errors(): ") + early.what());
  }
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
    void host_allreduce_sum(double* host_data, Index n) {
      std::vector<double> v(host_data, host_data + n);
      combine(v, false);
      std::copy(v.begin(), v.end(), host_data);
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

// The host faults: host arrays stand in for device memory (every call throws before touching
// it), with a null stream and a fake cuBLAS handle.
template <typename P, typename T = typename P::value_type>
Error host_fault(const P& policy, const Problem<T>& problem, Fault f) {
  const Index B = problem.B, D = problem.D, C = problem.C;
  std::vector<T> x(static_cast<std::size_t>((B + 1) * (D + 1))), w(static_cast<std::size_t>((C + 1) * (D + 1)));
  std::vector<T> dx(x.size()), dw(w.size()), dmargins(static_cast<std::size_t>(C + 1));
  const std::vector<std::int32_t> labels = labels_as<std::int32_t>(problem.labels);
  const std::size_t bytes = mc::workspace_bytes<T>(B, D, C);
  std::vector<unsigned char> memory(bytes);
  return capture_error([&] {
    mc::Workspace<T> ws(memory.data(), bytes);
    Calls<const P> c{policy, dmargins.data(), {x.data(), B, D}, {w.data(), C, D}, {dx.data(), B, D}, {dw.data(), C, D},
                     &ws, nullptr, reinterpret_cast<cublasHandle_t>(memory.data()), {}, false};
    switch (f) {
      case Fault::small_workspace: {
        mc::Workspace<T> small(memory.data(), bytes - 256);  // less than the layout once aligned
        c.ws = &small;
        c.forward_backward(labels.data());
        return;
      }
      case Fault::no_workspace: {
        mc::Workspace<T> none;
        c.ws = &none;
        c.forward_backward(labels.data());
        return;
      }
      case Fault::w_columns: c.W = {w.data(), C, D + 1}; break;
      case Fault::empty_batch: c.X = {x.data(), 0, D}; break;
      case Fault::x_leading_dimension: c.X = {x.data(), B, D, D - 1}; break;
      case Fault::null_labels: c.forward_backward(static_cast<const std::int64_t*>(nullptr)); return;
      case Fault::null_cublas: c.cublas = nullptr; break;
      case Fault::negative_block: c.options.class_block = -1; break;
      case Fault::dmargins_flipped: c.flip_dmargins = true; break;
      case Fault::shard_outside: {
        HostGroup group(1);
        HostGroup::Comm comm(group, 0, c.stream);
        c.W = {w.data(), C - 1, D};
        c.dW = {dw.data(), C - 1, D};
        if constexpr (Calls<const P>::learnable)
          throw std::logic_error("marginloss CUDA tests: the sharded entry points take no policy with learnable margins");
        else
          c.forward_backward(c.sync(), labels.data(), ml::Shard{3, C, comm});
        return;
      }
      case Fault::shard_other_stream:
      case Fault::shard_other_stream_async: {
        // The communicator's stream is another one (never used: the call throws first).
        HostGroup group(1);
        HostGroup::Comm comm(group, 0, reinterpret_cast<cudaStream_t>(memory.data()));
        if constexpr (Calls<const P>::learnable)
          throw std::logic_error("marginloss CUDA tests: the sharded entry points take no policy with learnable margins");
        else if (f == Fault::shard_other_stream)
          c.forward_backward(c.sync(), labels.data(), ml::Shard{0, C, comm});
        else
          (void)c.forward(c.async(), labels.data(), ml::Shard{0, C, comm});
        return;
      }
      case Fault::policy_on_host: break;
      case Fault::policy_on_host_async: {
        P modifiable = policy;
        (void)c.with_policy(modifiable).forward(c.async(), labels.data());
        return;
      }
      default: throw std::logic_error("marginloss CUDA tests: not a host fault");
    }
    c.forward_backward(labels.data());
  });
}

// The device faults: the problem with the fault injected, on the device.
template <typename P, typename T = typename P::value_type>
Error device_fault(const P& policy, const Problem<T>& problem, Fault f) {
  Problem<T> bad = problem;
  inject(f, bad);
  Stream stream;
  Cublas cublas;
  const DeviceProblem<T> dp(bad, 0, stream.get());
  const DevicePolicy<P> dpol(policy, stream.get());
  const std::size_t bytes = mc::workspace_bytes<T>(problem.B, problem.D, problem.C);
  DeviceBuffer memory(bytes);
  mc::Workspace<T> ws(memory.get(), bytes);
  const auto* labels = dp.labels32.template get<const std::int32_t>();
  // An upstream gradient of 1 in device memory.
  DeviceBuffer one(sizeof(T));
  upload(one.get<T>(), std::vector<T>{T(1)}, stream.get());
  return capture_error([&] {
    auto c = device_calls(dpol, dp, ws, stream.get(), cublas.get());
    switch (f) {
      case Fault::async_label: {
        nothing_thrown_before_check([&] {
          const auto fwd = c.forward(c.async(), labels);
          c.backward(fwd, one.get<const T>());
        });
        c.check_errors();
        return;
      }
      case Fault::unchecked_async: {
        DeviceBuffer clean(sizeof(std::int32_t) * problem.labels.size());
        upload(clean.get<std::int32_t>(), labels_as<std::int32_t>(problem.labels), stream.get());
        (void)c.forward(c.async(), labels);
        // The valid call reports the earlier, unchecked error (sticky until reported) ...
        try {
          (void)c.forward(clean.get<const std::int32_t>());
        } catch (const ml::invalid_argument&) {
          // ... once: the next valid call succeeds.
          c.forward_backward(clean.get<const std::int32_t>());
          throw;
        }
        return;
      }
      case Fault::nan_grad_host: {
        const auto fwd = c.forward(labels);
        c.backward(fwd, std::numeric_limits<T>::quiet_NaN());
        return;
      }
      case Fault::nan_grad_device:
      case Fault::nan_grad_device_sync: {
        DeviceBuffer grad(sizeof(T));
        upload(grad.get<T>(), std::vector<T>{std::numeric_limits<T>::quiet_NaN()}, stream.get());
        if (f == Fault::nan_grad_device_sync) {
          const auto fwd = c.forward(labels);
          c.backward(fwd, grad.get<const T>());
          return;
        }
        nothing_thrown_before_check([&] {
          const auto fwd = c.forward(c.async(), labels);
          c.backward(fwd, grad.get<const T>());
        });
        c.check_errors();
        return;
      }
      case Fault::backward_twice: {
        const auto fwd = c.forward(labels);
        c.backward(fwd, T(1));
        c.backward(fwd, T(1));
        return;
      }
      case Fault::stale_forward: {
        const auto first = c.forward(labels);
        const auto second = c.forward(labels);
        try {
          c.backward(first, T(1));
        } catch (const ml::invalid_argument&) {
          // The rejected backward consumed nothing: the latest forward's backward runs.
          c.backward(second, T(1));
          throw;
        }
        return;
      }
      case Fault::dx_shape: {
        const auto fwd = c.forward(labels);
        c.dX = {dp.dX.template get<T>(), problem.B - 1, problem.D};
        c.backward(fwd, T(1));
        return;
      }
      case Fault::backward_dmargins_flipped: {
        // For a policy without learnable margins: C entries of device memory (never written).
        DeviceBuffer extra(sizeof(T) * static_cast<std::size_t>(problem.C));
        const auto fwd = c.forward(labels);
        c.flip_dmargins = true;
        if (!c.learnable) c.dmargins = extra.get<T>();
        c.backward(fwd, T(1));
        return;
      }
      case Fault::async_loss: {
        const auto fwd = c.forward(c.async(), labels);
        (void)fwd.loss();
        return;
      }
      case Fault::policy_on_device_async:
        nothing_thrown_before_check([&] { (void)c.forward_backward(c.async(), labels); });
        c.check_errors();
        return;
      case Fault::nan_in_second_shard: throw std::logic_error("marginloss CUDA tests: a sharded fault runs by run_gpu_sharded");
      default:  // the bad inputs, policy_on_device
        dp.with_labels(int64_labels(f), [&](const auto* l) { return c.forward_backward(l); });
        return;
    }
  });
}

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

template <typename T>
Result<T> run_gpu(const AnyPolicy<T>& any, const Problem<T>& problem, const RunOptions& options) {
  return std::visit(
      [&](const auto& policy) {
        using P = std::decay_t<decltype(policy)>;
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
        const auto calls = device_calls(dpol, dp, ws, stream.get(), cublas.get(), opts);
        Result<T> r;
        r.loss = dp.with_labels(options.int64_labels, [&](const auto* labels) {
          if (!options.local_shard) return run_calls(calls, labels, options, r);
          // The single-GPU communicator in a Shard of all C classes: the single-GPU loss.
          if constexpr (Calls<const P>::learnable) {
            throw std::logic_error("marginloss CUDA tests: the sharded entry points take no policy with learnable margins");
          } else {
            mc::LocalCommunicator local(stream.get());
            return run_calls(calls, labels, options, r, ml::Shard{0, problem.C, local});
          }
        });
        r.class_block = ws.class_block();
        dp.read_gradients(r, stream.get());
        r.dmargins = dpol.read_dmargins(stream.get());
        return r;
      },
      any);
}

template <typename T>
Result<T> run_gpu_updating(AnyPolicy<T>& any, const Problem<T>& problem, Index class_block) {
  return std::visit(
      [&](auto& policy) {
        using P = std::decay_t<decltype(policy)>;
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
        r.loss = device_calls(dpol, dp, ws, stream.get(), cublas.get(), opts)
                     .forward_backward(dp.labels64.template get<const std::int64_t>());
        dp.read_gradients(r, stream.get());
        r.dmargins = dpol.read_dmargins(stream.get());
        dpol.copy_state_to(policy);
        return r;
      },
      any);
}

template <typename T>
std::vector<Result<T>> run_gpu_sharded(const AnyPolicy<T>& any, const Problem<T>& problem, int ranks,
                                       const RunOptions& options) {
  HostGroup group(ranks);
  std::vector<Result<T>> results(static_cast<std::size_t>(ranks));
  std::vector<T> dW_full(problem.W.size(), T(0));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      Result<T>& out = results[static_cast<std::size_t>(r)];
      out.error = capture_error([&] {
        std::visit(
            [&](const auto& policy) {
              using P = std::decay_t<decltype(policy)>;
              Stream stream;
              Cublas cublas;
              HostGroup::Comm comm(group, r, stream.get());
              const auto range = ml::even_class_range(problem.C, comm.size(), comm.rank());
              Problem<T> shard = problem;
              shard.C = range.count;
              shard.W.assign(problem.W.begin() + range.offset * problem.D,
                             problem.W.begin() + (range.offset + range.count) * problem.D);
              const DeviceProblem<T> dp(shard, 0, stream.get());
              const DevicePolicy<P> dpol(policy, stream.get());
              mc::Options opts;
              opts.class_block = options.class_block;
              const std::size_t bytes = mc::sharded_workspace_bytes<T>(problem.B, problem.D, range.count, opts);
              DeviceBuffer memory(bytes);
              mc::Workspace<T> ws(memory.get(), bytes);
              const auto calls = device_calls(dpol, dp, ws, stream.get(), cublas.get(), opts);
              if constexpr (Calls<const P>::learnable)
                throw std::logic_error("marginloss CUDA tests: the sharded entry points take no policy with learnable margins");
              else
                out.loss = dp.with_labels(options.int64_labels, [&](const auto* labels) {
                  const Index C = options.disagree_classes && r == ranks - 1 ? problem.C + 1 : problem.C;
                  return run_calls(calls, labels, options, out, ml::Shard{range, C, comm});
                });
              out.class_block = ws.class_block();
              dp.read_gradients(out, stream.get());
              std::copy(out.dW.begin(), out.dW.end(), dW_full.begin() + range.offset * problem.D);
            },
            any);
      });
    });
  for (auto& t : threads) t.join();
  for (auto& r : results) r.dW = dW_full;
  return results;
}

template <typename T>
Error run_with_fault(const AnyPolicy<T>& any, const Problem<T>& problem, Fault f) {
  return std::visit(
      [&](const auto& policy) { return needs_device(f) ? device_fault(policy, problem, f) : host_fault(policy, problem, f); },
      any);
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

#define MLCUDA_TEST_INSTANTIATE(T)                                                                               \
  template Result<T> run_gpu(const AnyPolicy<T>&, const Problem<T>&, const RunOptions&);                         \
  template std::vector<Result<T>> run_gpu_sharded(const AnyPolicy<T>&, const Problem<T>&, int, const RunOptions&); \
  template Result<T> run_gpu_updating(AnyPolicy<T>&, const Problem<T>&, Index);                                  \
  template Error run_with_fault(const AnyPolicy<T>&, const Problem<T>&, Fault);                                 \
  template std::size_t workspace_bytes<T>(Index, Index, Index, Index, std::size_t);                            \
  template std::size_t sharded_workspace_bytes<T>(Index, Index, Index, Index);                                  \
  template double norm_limit_lo<T>();                                                                           \
  template double norm_limit_hi<T>();

MLCUDA_TEST_INSTANTIATE(float)
MLCUDA_TEST_INSTANTIATE(double)

}  // namespace mlcuda_test
