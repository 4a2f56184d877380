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
// - Policies: every policy of marginloss except those with per-class margins (AdaptiveMargin,
//   ClassMargins), which are rejected at compile time.
#pragma once

#include "detail/engine.cuh"
#include "types.cuh"
#include "workspace.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {

/// The scalar type of policy P (float or double): the type of every matrix and of the loss.
template <typename P>
using value_t = typename P::value_type;

// ---------------------------------------------------------------------------------------------
// Split forward / backward (autograd engines): forward leaves in `ws` what backward needs.
// Pass the same policy and W to both; one backward per forward.

/// The forward: returns the batch-mean loss (waits for the stream) and leaves in `ws` what
/// backward() needs.
template <typename P, typename L>
value_t<P> forward(const P& policy, DeviceMatrix<const value_t<P>> X, DeviceMatrix<const value_t<P>> W, const L* labels,
                   Workspace<value_t<P>>& ws, cudaStream_t stream, cublasHandle_t cublas, const Options& options = {}) {
  detail::LocalComm comm{stream};
  detail::Engine::forward(policy, X, W, Index(0), W.rows, labels, comm, cublas, options, ws,
                          static_cast<value_t<P>*>(nullptr));
  return detail::Engine::check(ws, stream).loss;
}

/// Writes the loss to loss_out (device memory; may be null) without waiting for the device.
template <typename P, typename L>
void forward_async(const P& policy, DeviceMatrix<const value_t<P>> X, DeviceMatrix<const value_t<P>> W, const L* labels,
                   Workspace<value_t<P>>& ws, value_t<P>* loss_out, cudaStream_t stream, cublasHandle_t cublas,
                   const Options& options = {}) {
  detail::LocalComm comm{stream};
  detail::Engine::forward(policy, X, W, Index(0), W.rows, labels, comm, cublas, options, ws, loss_out);
}

/// dX (B x D) and dW (C x D) from the upstream gradient grad_loss = dL_total/dL (waits for the
/// stream; also reports the errors of an unchecked forward_async).
template <typename P>
void backward(const P& policy, DeviceMatrix<const value_t<P>> W, Workspace<value_t<P>>& ws, value_t<P> grad_loss,
              DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW, cudaStream_t stream, cublasHandle_t cublas) {
  detail::LocalComm comm{stream};
  detail::Engine::backward(policy, W, comm, ws, grad_loss, static_cast<const value_t<P>*>(nullptr), dX, dW, cublas);
  detail::Engine::check(ws, stream);
}

/// The same without waiting; the upstream gradient is read on the device from
/// grad_loss_device[0] (e.g. an autograd engine's output gradient), or is 1 when that is null.
template <typename P>
void backward_async(const P& policy, DeviceMatrix<const value_t<P>> W, Workspace<value_t<P>>& ws,
                    const value_t<P>* grad_loss_device, DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW,
                    cudaStream_t stream, cublasHandle_t cublas) {
  detail::LocalComm comm{stream};
  detail::Engine::backward(policy, W, comm, ws, value_t<P>(1), grad_loss_device, dX, dW, cublas);
}

// ---------------------------------------------------------------------------------------------
// Forward and backward in one call (upstream gradient 1).

/// Forward and backward with upstream gradient 1: writes dX and dW, returns the loss; one wait
/// for the stream, at the end.
template <typename P, typename L>
value_t<P> forward_backward(const P& policy, DeviceMatrix<const value_t<P>> X, DeviceMatrix<const value_t<P>> W,
                            const L* labels, DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW,
                            Workspace<value_t<P>>& ws, cudaStream_t stream, cublasHandle_t cublas,
                            const Options& options = {}) {
  detail::LocalComm comm{stream};
  detail::Engine::forward(policy, X, W, Index(0), W.rows, labels, comm, cublas, options, ws,
                          static_cast<value_t<P>*>(nullptr));
  detail::Engine::backward(policy, W, comm, ws, value_t<P>(1), static_cast<const value_t<P>*>(nullptr), dX, dW, cublas);
  return detail::Engine::check(ws, stream).loss;
}

/// The same with a workspace given as memory and size (e.g. from a caching allocator).
template <typename P, typename L>
value_t<P> forward_backward(const P& policy, DeviceMatrix<const value_t<P>> X, DeviceMatrix<const value_t<P>> W,
                            const L* labels, DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW, void* workspace,
                            std::size_t workspace_size, cudaStream_t stream, cublasHandle_t cublas,
                            const Options& options = {}) {
  Workspace<value_t<P>> ws(workspace, workspace_size);
  return forward_backward(policy, X, W, labels, dX, dW, ws, stream, cublas, options);
}

/// Without waiting: the loss goes to loss_out (device memory; may be null).
template <typename P, typename L>
void forward_backward_async(const P& policy, DeviceMatrix<const value_t<P>> X, DeviceMatrix<const value_t<P>> W,
                            const L* labels, DeviceMatrix<value_t<P>> dX, DeviceMatrix<value_t<P>> dW,
                            Workspace<value_t<P>>& ws, value_t<P>* loss_out, cudaStream_t stream,
                            cublasHandle_t cublas, const Options& options = {}) {
  detail::LocalComm comm{stream};
  detail::Engine::forward(policy, X, W, Index(0), W.rows, labels, comm, cublas, options, ws, loss_out);
  detail::Engine::backward(policy, W, comm, ws, value_t<P>(1), static_cast<const value_t<P>*>(nullptr), dX, dW, cublas);
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
