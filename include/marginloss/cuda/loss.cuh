// marginloss::cuda: the entry points of the CUDA backend -- the CPU API's forward, backward
// and forward_backward on device pointers, in the same shapes.
//
//   namespace ml = marginloss;
//   const std::size_t bytes = ml::cuda::workspace_bytes<float>(B, D, C);   // once
//   cudaMalloc(&memory, bytes);
//   ml::cuda::Workspace<float> ws(memory, bytes);
//   const ml::cuda::Execution exec{stream, cublas};
//   float loss = ml::cuda::forward_backward(ml::ArcFace<float>{64, 0.5f},
//       ml::cuda::DeviceMatrix<const float>(d_X, B, D), ml::cuda::DeviceMatrix<const float>(d_W, C, D),
//       d_labels /* int32_t* or int64_t*, B entries */,
//       {ml::cuda::DeviceMatrix<float>(d_dX, B, D), ml::cuda::DeviceMatrix<float>(d_dW, C, D)}, ws, exec);
//   // split, for autograd engines:
//   auto fwd = ml::cuda::forward(policy, X, W, d_labels, ws, exec);     // fwd.loss()
//   ml::cuda::backward(fwd, grad_loss, {dX, dW});
//
// - X (B x D), W (C x D), dX, dW: row-major device matrices with a leading dimension
//   (DeviceMatrix); labels: B integers in [0, C) in device memory. T (float or double) is the
//   policy's value_type. Results equal the CPU engine's to rounding.
// - Execution{stream, cublas}: the work is enqueued on `stream`; the handle is used on `stream`
//   for the call (its stream and pointer mode are restored afterwards). Synchronous: each call
//   ends with one copy of a small status block to the host (the loss and the error flags) and a
//   cudaStreamSynchronize; bad input throws marginloss::invalid_argument exactly where the CPU
//   API does, with the same messages, and the loss is a host value.
// - Async{stream, cublas}: the calls never wait for the device. The loss stays on the device
//   (Forward::device_loss(); forward_backward returns that pointer), valid until the next forward
//   on the workspace; errors found on the device (labels, rows, non-finite results) stay in the
//   workspace until check_errors() (or the next synchronous call on the workspace) reads them.
//   Arguments checked on the host (shapes, hyper-parameters, workspace size) still throw at once.
//   The backward of an asynchronous forward runs asynchronously too and may take the upstream
//   gradient as a device pointer (an autograd engine's output gradient).
// - A Shard{offset, C, comm} argument makes the call one rank's part of the class-sharded loss
//   (cuda/sharded.cuh); the Execution's stream must be comm.stream().
// - No allocation: the workspace is caller-owned device memory (workspace.cuh).
// - CUDA and cuBLAS failures throw marginloss::cuda_error naming the call.
// - The forward calls take the policy by forwarding reference, as on the CPU: CurricularFace
//   (update_tau_in_forward = true, the default) has its tau updated from the batch's target
//   cosines before use, which needs the policy as a modifiable object and, on the GPU, the batch
//   mean on the host before the row pass (one small copy and a wait inside the forward): the
//   synchronous calls do it; the asynchronous ones reject it (set update_tau_in_forward = false
//   and update tau yourself, e.g. from an all-reduced mean).
// - Policies: every policy of marginloss. Per-class margins (AdaptiveMargin, ClassMargins) are
//   views of DEVICE memory here (ClassValues{d_margins, C}); every value is checked on the
//   device with the CPU's message. Learnable margins (AdaptiveMargin) need
//   Gradients{dX, dW, d_dmargins} (C entries, device memory) and add the regulariser to the loss,
//   as on the CPU.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "../detail/forward_context.hpp"
#include "../distributed/shard.hpp"
#include "communicator.cuh"
#include "detail/engine.cuh"
#include "types.cuh"
#include "workspace.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {

/// The scalar type of policy P (float or double): the type of every matrix and of the loss.
template <typename P>
using value_t = typename std::decay_t<P>::value_type;

/// Synchronous execution: the stream and cuBLAS handle of the call; the call waits for the
/// stream at its end, throws what the device found and returns the loss on the host.
struct Execution {
  cudaStream_t stream = nullptr;   ///< the stream the work is enqueued on
  cublasHandle_t cublas = nullptr; ///< the caller's cuBLAS handle (used on `stream`)
};

/// Asynchronous execution: the same, without waiting; the loss stays on the device and errors
/// found there wait for check_errors() (see the top of cuda/loss.cuh).
struct Async {
  cudaStream_t stream = nullptr;   ///< the stream the work is enqueued on
  cublasHandle_t cublas = nullptr; ///< the caller's cuBLAS handle (used on `stream`)
};

/// Where backward() and forward_backward() write: dX (B x D), dW (C x D, or the shard's rows)
/// and, for learnable margins (AdaptiveMargin), dmargins (C entries; null for every other policy:
/// a call checks both ways). Device memory, caller-owned.
template <typename T>
struct Gradients {
  DeviceMatrix<T> dX;    ///< B x D
  DeviceMatrix<T> dW;    ///< C x D (the shard's rows when sharded)
  T* dmargins = nullptr; ///< C entries for learnable margins, else null
};

namespace detail {


// What forward_backward returns: the loss on the host (Execution) or its device pointer (Async).
template <typename E, typename T>
using loss_t = std::conditional_t<std::is_same_v<E, Async>, const T*, T>;

template <typename E>
inline constexpr bool is_execution_v = std::is_same_v<E, Execution> || std::is_same_v<E, Async>;

template <typename E>
constexpr void check_execution() {
  static_assert(is_execution_v<E>, "marginloss::cuda: the execution argument is cuda::Execution{stream, cublas} "
                                   "(synchronous) or cuda::Async{stream, cublas}");
}

template <typename P, typename T>
void check_dmargins_given(const Gradients<T>& out) {
  marginloss::detail::check_dmargins_given<P>(out.dmargins != nullptr, ", device memory");
}

}  // namespace detail

/// What cuda::forward() leaves for its backward(): the policy as the forward used it, W, the
/// execution (stream, cuBLAS handle, synchronous or not), the communicator of a sharded call and
/// the workspace. Cheap to copy; refers to the workspace, W and the communicator, which must
/// outlive it. One backward per forward.
template <typename P, typename Comm = LocalCommunicator>
class Forward : public marginloss::detail::ForwardContext<P, Workspace<typename P::value_type>> {
  using T = typename P::value_type;
  using Base = marginloss::detail::ForwardContext<P, Workspace<T>>;

 public:
  /// The loss (with the regulariser for learnable margins) of a synchronous forward; an
  /// asynchronous forward's loss is on the device (device_loss()): asking for it here throws.
  T loss() const {
    if (asynchronous_) fail_async_loss();
    return loss_;
  }
  /// The loss in device memory (in the workspace), valid until its next forward.
  const T* device_loss() const { return device_loss_; }
  /// True for a forward run with cuda::Async.
  bool asynchronous() const { return asynchronous_; }
  /// The stream the forward ran on (and its backward runs on).
  cudaStream_t stream() const { return stream_; }

  /// \cond INTERNAL
  Forward(marginloss::detail::ForwardKey, const P& policy, DeviceMatrix<const T> W, Workspace<T>& ws, Comm comm,
          cudaStream_t stream, cublasHandle_t cublas, bool asynchronous, T loss)
      : Base(policy, ws), W_(W), comm_(comm), stream_(stream), cublas_(cublas), asynchronous_(asynchronous),
        loss_(loss), device_loss_(detail::Engine::device_loss(ws)) {}
  const DeviceMatrix<const T>& weights() const { return W_; }
  Comm& communicator() const { return comm_; }
  cublasHandle_t cublas() const { return cublas_; }
  using Base::check_current;
  /// \endcond

 private:
  static void fail_async_loss() {
    marginloss::detail::fail("the loss of an asynchronous forward (cuda::Async) is on the device: read "
                             "device_loss() after the stream, or run the forward with cuda::Execution");
  }
  DeviceMatrix<const T> W_;
  mutable Comm comm_;  // cuda::LocalCommunicator (by value), or detail::CommRef to the caller's
  cudaStream_t stream_;
  cublasHandle_t cublas_;
  bool asynchronous_;
  T loss_;
  const T* device_loss_;
};

namespace detail {

// A sharded Forward keeps the caller's communicator by reference.
template <typename Comm>
struct CommRef {
  Comm* comm;
  int rank() const { return comm->rank(); }
  int size() const { return comm->size(); }
  cudaStream_t stream() const { return comm->stream(); }
  template <typename U>
  void allreduce_max(U* data, Index n) { comm->allreduce_max(data, n); }
  template <typename U>
  void allreduce_sum(U* data, Index n) { comm->allreduce_sum(data, n); }
  template <typename U>
  void host_allreduce_sum(U* data, Index n) { comm->host_allreduce_sum(data, n); }
};

// The forward on this GPU's rows W of global classes [offset, offset + W.rows) of num_classes.
// may_wait: the engine may wait for the stream (CurricularFace's tau update); wait_now: read the
// status (loss, errors) at once, as a synchronous forward does.
template <typename PP, typename L, typename Comm, typename P = std::decay_t<PP>, typename T = typename P::value_type>
Forward<P, Comm> forward_on(PP&& policy, DeviceMatrix<const T> X, DeviceMatrix<const T> W, Index offset,
                            Index num_classes, const L* labels, Comm comm, Workspace<T>& ws, cudaStream_t stream,
                            cublasHandle_t cublas, bool may_wait, bool wait_now, const Options& options) {
  Engine::forward(std::forward<PP>(policy), X, W, offset, num_classes, labels, comm, cublas, options, ws,
                  static_cast<T*>(nullptr), may_wait);
  const T loss = wait_now ? Engine::check(ws, stream).loss : T(0);
  return {marginloss::detail::ForwardKey{}, policy, W, ws, comm, stream, cublas, !wait_now, loss};
}

// The communicator a sharded call runs with (and its Forward keeps): the caller's by reference,
// or for a single-GPU communicator (cuda::LocalCommunicator or a type derived from it) a
// LocalCommunicator on its stream, so that the engine runs the single-GPU loss (no collectives,
// workspace_bytes' layout) as it does for one -- not the sharded path, whose workspace is larger.
template <typename Comm>
using shard_comm_t = std::conditional_t<is_local_v<Comm>, LocalCommunicator, CommRef<Comm>>;

// The communicator of a sharded call, after the checks every sharded entry point makes.
template <typename PP, typename Comm, typename E>
shard_comm_t<Comm> shard_communicator(const Shard<Comm>& shard, const E& exec) {
  check_execution<E>();
  check_device_communicator<Comm>();
  static_assert(!learnable_v<std::decay_t<PP>>, MARGINLOSS_SHARDED_NO_LEARNABLE_MARGINS);
  if (exec.stream != shard.comm.stream())
    marginloss::detail::fail("the execution's stream is not the communicator's: a sharded call runs on comm.stream()");
  if constexpr (is_local_v<Comm>)
    return LocalCommunicator(shard.comm.stream());
  else
    return CommRef<Comm>{&shard.comm};
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Split forward / backward (autograd engines).

/// The forward on one GPU: returns the context backward() takes (fwd.loss() for a synchronous
/// call, fwd.device_loss() for either).
template <typename PP, typename L, typename E>
Forward<std::decay_t<PP>> forward(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W,
                                  const L* labels, Workspace<value_t<PP>>& ws, const E& exec,
                                  const Options& options = {}) {
  detail::check_execution<E>();
  constexpr bool sync = std::is_same_v<E, Execution>;
  return detail::forward_on(std::forward<PP>(policy), X, W, Index(0), W.rows, labels, LocalCommunicator(exec.stream), ws,
                            exec.stream, exec.cublas, sync, sync, options);
}

/// One rank's forward of the class-sharded loss (cuda/sharded.cuh): W_shard holds the global
/// classes [shard.offset, shard.offset + W_shard.rows) of shard.num_classes; the execution's
/// stream must be shard.comm.stream().
template <typename PP, typename L, typename E, typename Comm>
Forward<std::decay_t<PP>, detail::shard_comm_t<Comm>> forward(PP&& policy, DeviceMatrix<const value_t<PP>> X,
                                                              DeviceMatrix<const value_t<PP>> W_shard, const L* labels,
                                                              Workspace<value_t<PP>>& ws, const E& exec,
                                                              Shard<Comm> shard, const Options& options = {}) {
  constexpr bool sync = std::is_same_v<E, Execution>;
  const auto comm = detail::shard_communicator<PP>(shard, exec);
  return detail::forward_on(std::forward<PP>(policy), X, W_shard, shard.offset, shard.num_classes, labels, comm, ws,
                            exec.stream, exec.cublas, sync, sync, options);
}

namespace detail {

// The backward of `fwd` on its stream; the upstream gradient is grad_loss_device[0] when that is
// not null, else grad_loss. Its own argument checks agree with the other ranks when sharded.
template <typename P, typename Comm, typename T = typename P::value_type>
void backward_on(const Forward<P, Comm>& fwd, T grad_loss, const T* grad_loss_device, const Gradients<T>& out) {
  marginloss::detail::check_backward_arguments(&fwd.communicator(), [&] {
    check_dmargins_given<P>(out);
    fwd.check_current();
  });
  Engine::backward(fwd.policy(), fwd.weights(), fwd.communicator(), fwd.workspace(), grad_loss, grad_loss_device,
                   out.dX, out.dW, fwd.cublas(), out.dmargins);
}

// forward_backward after its forward: the backward on the forward's stream, then (Execution)
// one wait that reads the loss and the errors of both.

template <typename E, typename P, typename Comm, typename T = typename P::value_type>
loss_t<E, T> finish_forward_backward(const Forward<P, Comm>& fwd, const Gradients<T>& out) {
  backward_on(fwd, T(1), static_cast<const T*>(nullptr), out);
  if constexpr (std::is_same_v<E, Async>)
    return fwd.device_loss();
  else
    return Engine::check(fwd.workspace(), fwd.stream()).loss;
}

}  // namespace detail

/// dX, dW (and dmargins) times the upstream gradient grad_loss, on the forward's stream;
/// synchronous or not as the forward was.
template <typename P, typename Comm>
void backward(const Forward<P, Comm>& fwd, value_t<P> grad_loss, Gradients<value_t<P>> out) {
  detail::backward_on(fwd, grad_loss, static_cast<const value_t<P>*>(nullptr), out);
  if (!fwd.asynchronous()) detail::Engine::check(fwd.workspace(), fwd.stream());
}

/// The same with the upstream gradient read on the device from grad_loss_device[0] (e.g. an
/// autograd engine's output gradient).
template <typename P, typename Comm>
void backward(const Forward<P, Comm>& fwd, const value_t<P>* grad_loss_device, Gradients<value_t<P>> out) {
  if (!grad_loss_device) marginloss::detail::fail("grad_loss is a null device pointer");
  detail::backward_on(fwd, value_t<P>(1), grad_loss_device, out);
  if (!fwd.asynchronous()) detail::Engine::check(fwd.workspace(), fwd.stream());
}

// ---------------------------------------------------------------------------------------------
// Forward and backward in one call (upstream gradient 1): the loss on the host (Execution) or
// its device pointer (Async, valid until the workspace's next forward).

/// One GPU.
template <typename PP, typename L, typename E>
detail::loss_t<E, value_t<PP>> forward_backward(PP&& policy, DeviceMatrix<const value_t<PP>> X,
                                        DeviceMatrix<const value_t<PP>> W, const L* labels,
                                        Gradients<value_t<PP>> out, Workspace<value_t<PP>>& ws, const E& exec,
                                        const Options& options = {}) {
  detail::check_execution<E>();
  detail::check_dmargins_given<std::decay_t<PP>>(out);
  const auto fwd = detail::forward_on(std::forward<PP>(policy), X, W, Index(0), W.rows, labels,
                                      LocalCommunicator(exec.stream), ws, exec.stream, exec.cublas,
                                      std::is_same_v<E, Execution>, false, options);
  return detail::finish_forward_backward<E>(fwd, out);
}

/// One rank of the class-sharded loss.
template <typename PP, typename L, typename E, typename Comm>
detail::loss_t<E, value_t<PP>> forward_backward(PP&& policy, DeviceMatrix<const value_t<PP>> X,
                                        DeviceMatrix<const value_t<PP>> W_shard, const L* labels,
                                        Gradients<value_t<PP>> out, Workspace<value_t<PP>>& ws, const E& exec,
                                        Shard<Comm> shard, const Options& options = {}) {
  detail::check_execution<E>();
  // No check of `out` before the forward: a rank that threw here would leave the others in the
  // forward's collectives; the backward checks it with every rank.
  const auto comm = detail::shard_communicator<PP>(shard, exec);
  const auto fwd = detail::forward_on(std::forward<PP>(policy), X, W_shard, shard.offset, shard.num_classes, labels, comm,
                                      ws, exec.stream, exec.cublas, std::is_same_v<E, Execution>, false, options);
  return detail::finish_forward_backward<E>(fwd, out);
}

/// Waits for `stream` and throws what the asynchronous calls on `ws` recorded since the last
/// check (marginloss::invalid_argument with the synchronous calls' messages). Returns nothing
/// when all is well. Cheap: one small copy.
template <typename T>
void check_errors(Workspace<T>& ws, cudaStream_t stream) {
  detail::Engine::check(ws, stream);
}

}  // namespace cuda
MARGINLOSS_NAMESPACE_END
