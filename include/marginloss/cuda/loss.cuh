// marginloss::cuda: the entry points of the CUDA backend -- the CPU API's forward, backward
// and forward_backward on device pointers.
//
//   namespace ml = marginloss;
//   const std::size_t bytes = ml::cuda::workspace_bytes<float>(B, D, C);   // once
//   cudaMalloc(&memory, bytes);
//   ml::cuda::Workspace<float> ws(memory, bytes);
//   float loss = ml::cuda::forward_backward(ml::ArcFace<float>{64, 0.5f},
//       ml::cuda::DeviceMatrix<const float>(d_X, B, D), ml::cuda::DeviceMatrix<const float>(d_W, C, D),
//       d_labels /* int32_t* or int64_t*, B entries */,
//       ml::cuda::DeviceMatrix<float>(d_dX, B, D), ml::cuda::DeviceMatrix<float>(d_dW, C, D),
//       ws, stream, cublas);
//
// - X (B x D), W (C x D), dX, dW: row-major device matrices with a leading dimension
//   (DeviceMatrix); labels: B integers in [0, C) in device memory. T (float or double) is the
//   policy's value_type. Results equal the CPU engine's to rounding.
// - stream and cublas are the caller's: the work is enqueued on `stream`; the handle is used on
//   `stream` for the call (its stream and pointer mode are restored afterwards).
// - No allocation: the workspace is caller-owned device memory (workspace.cuh).
// - Synchronous calls (forward, backward, forward_backward) end with one copy of a small status
//   block to the host (the loss and the error flags) and a cudaStreamSynchronize: they throw
//   marginloss::invalid_argument for bad input exactly where the CPU API does, with the same
//   messages, and return the loss as a host value.
// - Asynchronous calls (*_async) never wait for the device: the loss goes to a device pointer
//   and errors found on the device (labels, rows, non-finite results) stay in the workspace
//   until check_errors() (or the next synchronous call on the workspace) reads them. Arguments
//   checked on the host (shapes, hyper-parameters, workspace size) still throw at once.
// - CUDA and cuBLAS failures throw marginloss::cuda_error naming the call.
// - The forward calls take the policy by forwarding reference, as on the CPU: CurricularFace
//   (update_tau_in_forward = true, the default) has its tau updated from the batch's target
//   cosines before use, which needs the policy as a modifiable object and, on the GPU, the batch
//   mean on the host before the row pass (one small copy and a wait inside the forward): the
//   synchronous calls do it; the asynchronous ones reject it (set update_tau_in_forward = false
//   and update tau yourself, e.g. from an all-reduced mean).
// - Policies: every policy of marginloss. Per-class margins (AdaptiveMargin, ClassMargins) are
//   views of DEVICE memory here (ClassValues{d_margins, C}); every value is checked on the
//   device with the CPU's message. Learnable margins (AdaptiveMargin) take the overloads with a
//   `dmargins` device pointer (C entries) and add the regulariser to the loss, as on the CPU.
#pragma once

#include <type_traits>
#include <utility>

#include "detail/engine.cuh"
#include "types.cuh"
#include "workspace.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {

/// The scalar type of policy P (float or double): the type of every matrix and of the loss.
template <typename P>
using value_t = typename std::decay_t<P>::value_type;

/// A policy with learnable margins used through an entry point without dmargins would train
/// margins that never get a gradient: a compile-time error instead (as on the CPU).
#define MARGINLOSS_CUDA_LEARNABLE_MARGINS_NEED_DMARGINS                                                       \
  "marginloss::cuda: this policy has learnable margins (AdaptiveMargin): pass a dmargins device pointer (C " \
  "entries) so they get their gradient, or use ml::class_margins(ml::CosFace<T>{s, 0}, margins) to keep them fixed"

// ---------------------------------------------------------------------------------------------
// Split forward / backward (autograd engines): forward leaves in `ws` what backward needs.
// Pass the same policy and W to both; one backward per forward.

/// The forward: returns the batch-mean loss (waits for the stream) and leaves in `ws` what
/// backward() needs.
template <typename PP, typename L>
value_t<PP> forward(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W, const L* labels,
                   Workspace<value_t<PP>>& ws, cudaStream_t stream, cublasHandle_t cublas, const Options& options = {}) {
  LocalCommunicator comm(stream);
  detail::Engine::forward(std::forward<PP>(policy), X, W, Index(0), W.rows, labels, comm, cublas, options, ws,
                          static_cast<value_t<PP>*>(nullptr), true);
  return detail::Engine::check(ws, stream).loss;
}

/// Writes the loss to loss_out (device memory; may be null) without waiting for the device.
template <typename PP, typename L>
void forward_async(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W, const L* labels,
                   Workspace<value_t<PP>>& ws, value_t<PP>* loss_out, cudaStream_t stream, cublasHandle_t cublas,
                   const Options& options = {}) {
  LocalCommunicator comm(stream);
  detail::Engine::forward(std::forward<PP>(policy), X, W, Index(0), W.rows, labels, comm, cublas, options, ws, loss_out, false);
}

/// dX (B x D) and dW (C x D) from the upstream gradient grad_loss = dL_total/dL (waits for the
/// stream; also reports the errors of an unchecked forward_async).
template <typename P>
void backward(const P& policy, DeviceMatrix<const value_t<P>> W, Workspace<value_t<P>>& ws, value_t<P> grad_loss,
              DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW, cudaStream_t stream, cublasHandle_t cublas) {
  static_assert(!detail::learnable_v<P>, MARGINLOSS_CUDA_LEARNABLE_MARGINS_NEED_DMARGINS);
  LocalCommunicator comm(stream);
  detail::Engine::backward(policy, W, comm, ws, grad_loss, static_cast<const value_t<P>*>(nullptr), dX, dW, cublas);
  detail::Engine::check(ws, stream);
}

/// The same without waiting; the upstream gradient is read on the device from
/// grad_loss_device[0] (e.g. an autograd engine's output gradient), or is 1 when that is null.
template <typename P>
void backward_async(const P& policy, DeviceMatrix<const value_t<P>> W, Workspace<value_t<P>>& ws,
                    const value_t<P>* grad_loss_device, DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW,
                    cudaStream_t stream, cublasHandle_t cublas) {
  static_assert(!detail::learnable_v<P>, MARGINLOSS_CUDA_LEARNABLE_MARGINS_NEED_DMARGINS);
  LocalCommunicator comm(stream);
  detail::Engine::backward(policy, W, comm, ws, value_t<P>(1), grad_loss_device, dX, dW, cublas);
}

// ---------------------------------------------------------------------------------------------
// Forward and backward in one call (upstream gradient 1).

/// Forward and backward with upstream gradient 1: writes dX and dW, returns the loss; one wait
/// for the stream, at the end.
template <typename PP, typename L>
value_t<PP> forward_backward(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W,
                            const L* labels, DeviceMatrix<value_t<PP>> dX, DeviceMatrix<value_t<PP>> dW,
                            Workspace<value_t<PP>>& ws, cudaStream_t stream, cublasHandle_t cublas,
                            const Options& options = {}) {
  static_assert(!detail::learnable_v<std::decay_t<PP>>, MARGINLOSS_CUDA_LEARNABLE_MARGINS_NEED_DMARGINS);
  LocalCommunicator comm(stream);
  detail::Engine::forward(std::forward<PP>(policy), X, W, Index(0), W.rows, labels, comm, cublas, options, ws,
                          static_cast<value_t<PP>*>(nullptr), true);
  detail::Engine::backward(static_cast<const std::decay_t<PP>&>(policy), W, comm, ws, value_t<PP>(1), static_cast<const value_t<PP>*>(nullptr), dX, dW, cublas);
  return detail::Engine::check(ws, stream).loss;
}

/// The same with a workspace given as memory and size (e.g. from a caching allocator).
template <typename PP, typename L>
value_t<PP> forward_backward(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W,
                            const L* labels, DeviceMatrix<value_t<PP>> dX, DeviceMatrix<value_t<PP>> dW, void* workspace,
                            std::size_t workspace_size, cudaStream_t stream, cublasHandle_t cublas,
                            const Options& options = {}) {
  Workspace<value_t<PP>> ws(workspace, workspace_size);
  return forward_backward(std::forward<PP>(policy), X, W, labels, dX, dW, ws, stream, cublas, options);
}

/// Without waiting: the loss goes to loss_out (device memory; may be null).
template <typename PP, typename L>
void forward_backward_async(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W,
                            const L* labels, DeviceMatrix<value_t<PP>> dX, DeviceMatrix<value_t<PP>> dW,
                            Workspace<value_t<PP>>& ws, value_t<PP>* loss_out, cudaStream_t stream,
                            cublasHandle_t cublas, const Options& options = {}) {
  static_assert(!detail::learnable_v<std::decay_t<PP>>, MARGINLOSS_CUDA_LEARNABLE_MARGINS_NEED_DMARGINS);
  LocalCommunicator comm(stream);
  detail::Engine::forward(std::forward<PP>(policy), X, W, Index(0), W.rows, labels, comm, cublas, options, ws, loss_out, false);
  detail::Engine::backward(static_cast<const std::decay_t<PP>&>(policy), W, comm, ws, value_t<PP>(1), static_cast<const value_t<PP>*>(nullptr), dX, dW, cublas);
}

// ---------------------------------------------------------------------------------------------
// Learnable margins (AdaptiveMargin): the same calls, also writing dL/dmargins (device memory,
// C entries, the margins' order). The loss includes the regulariser R.

/// backward() that also writes dL/dmargins.
template <typename P>
void backward(const P& policy, DeviceMatrix<const value_t<P>> W, Workspace<value_t<P>>& ws, value_t<P> grad_loss,
              DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW, value_t<P>* dmargins, cudaStream_t stream,
              cublasHandle_t cublas) {
  static_assert(detail::learnable_v<P>, "marginloss::cuda: dmargins is for policies with learnable margins");
  LocalCommunicator comm(stream);
  detail::Engine::backward(policy, W, comm, ws, grad_loss, static_cast<const value_t<P>*>(nullptr), dX, dW, cublas,
                           dmargins);
  detail::Engine::check(ws, stream);
}

/// backward_async() that also writes dL/dmargins.
template <typename P>
void backward_async(const P& policy, DeviceMatrix<const value_t<P>> W, Workspace<value_t<P>>& ws,
                    const value_t<P>* grad_loss_device, DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW,
                    value_t<P>* dmargins, cudaStream_t stream, cublasHandle_t cublas) {
  static_assert(detail::learnable_v<P>, "marginloss::cuda: dmargins is for policies with learnable margins");
  LocalCommunicator comm(stream);
  detail::Engine::backward(policy, W, comm, ws, value_t<P>(1), grad_loss_device, dX, dW, cublas, dmargins);
}

/// forward_backward() that also writes dL/dmargins; returns the loss (regulariser included).
template <typename PP, typename L>
value_t<PP> forward_backward(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W,
                            const L* labels, DeviceMatrix<value_t<PP>> dX, DeviceMatrix<value_t<PP>> dW,
                            value_t<PP>* dmargins, Workspace<value_t<PP>>& ws, cudaStream_t stream, cublasHandle_t cublas,
                            const Options& options = {}) {
  static_assert(detail::learnable_v<std::decay_t<PP>>, "marginloss::cuda: dmargins is for policies with learnable margins");
  LocalCommunicator comm(stream);
  detail::Engine::forward(std::forward<PP>(policy), X, W, Index(0), W.rows, labels, comm, cublas, options, ws,
                          static_cast<value_t<PP>*>(nullptr), true);
  detail::Engine::backward(static_cast<const std::decay_t<PP>&>(policy), W, comm, ws, value_t<PP>(1), static_cast<const value_t<PP>*>(nullptr), dX, dW, cublas,
                           dmargins);
  return detail::Engine::check(ws, stream).loss;
}

/// forward_backward_async() that also writes dL/dmargins.
template <typename PP, typename L>
void forward_backward_async(PP&& policy, DeviceMatrix<const value_t<PP>> X, DeviceMatrix<const value_t<PP>> W,
                            const L* labels, DeviceMatrix<value_t<PP>> dX, DeviceMatrix<value_t<PP>> dW,
                            value_t<PP>* dmargins, Workspace<value_t<PP>>& ws, value_t<PP>* loss_out, cudaStream_t stream,
                            cublasHandle_t cublas, const Options& options = {}) {
  static_assert(detail::learnable_v<std::decay_t<PP>>, "marginloss::cuda: dmargins is for policies with learnable margins");
  LocalCommunicator comm(stream);
  detail::Engine::forward(std::forward<PP>(policy), X, W, Index(0), W.rows, labels, comm, cublas, options, ws, loss_out, false);
  detail::Engine::backward(static_cast<const std::decay_t<PP>&>(policy), W, comm, ws, value_t<PP>(1), static_cast<const value_t<PP>*>(nullptr), dX, dW, cublas,
                           dmargins);
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
