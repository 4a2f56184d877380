// marginloss::cuda: the host side of the CUDA backend -- checks, then the kernels and products
// of one forward or backward enqueued on a stream, then (synchronous calls) one copy of the
// status back to the host. The algorithm is the CPU engine's (detail/engine.hpp):
//   forward : labels and row norms checked on the device, X^ = X / |x|, t_i, then per block of
//             classes K = X^ W_b^T (cuBLAS), the row pass (row_pass.cuh) merged into a running
//             (max, sum) per row; sharded: all-reduce(max), rescale, all-reduce(sum); the loss.
//   backward: per block (recomputing K unless the classes are one block, kept in the
//             workspace) G' in place of the cosines, acc += G' W_b, dW_b = G'^T X^ and the W
//             projection; sharded: all-reduce(sum) of acc (and dL/dS); the X projection.
// Errors found on the device (bad labels, rows, non-finite results) are flags in the
// workspace's status, read back by the synchronous calls and by check_errors(), and turned
// into the CPU's messages. Control flow on the host never depends on them, so the ranks of a
// sharded call always issue the same collectives (no deadlock on a bad shard). Arguments
// rejected on the host are agreed on across the ranks before any collective, by the CPU
// engine's code (distributed/agreement.hpp).
#pragma once

#include <climits>
#include <cmath>
#include <cstring>
#include <exception>
#include <type_traits>
#include <vector>

#include "../../detail/checks.hpp"
#include "../../detail/forward_record.hpp"
#include "../../distributed/agreement.hpp"
#include "../../errors.hpp"
#include "../../policies/common.hpp"
#include "../check.cuh"
#include "../communicator.cuh"
#include "../types.cuh"
#include "../workspace.cuh"
#include "gemm.cuh"
#include "labels.cuh"
#include "margins.cuh"
#include "../../detail/norm_range.hpp"
#include "projections.cuh"
#include "row_norms.cuh"
#include "row_pass.cuh"
#include "state.cuh"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

using marginloss::detail::check_grad_loss;
using marginloss::detail::check_output_shape;
using marginloss::detail::check_shapes;
using marginloss::detail::check_shard_range;
using marginloss::detail::fail;
using marginloss::detail::fail_label;
using marginloss::detail::fail_not_representable;
using marginloss::detail::fail_other_rank;

using marginloss::detail::agree_on_call;
using marginloss::detail::agree_on_errors;
using marginloss::detail::call_record;
using marginloss::detail::CallRecord;
using marginloss::detail::set_fingerprint;

// A single-GPU call (cuda::LocalCommunicator) has no collectives and no sharded buffers.
template <typename Comm>
inline constexpr bool is_local_v = marginloss::is_local_communicator_v<Comm>;

// The sharded entry points need a DeviceCommunicator (distributed/communicator.hpp).
template <typename Comm>
constexpr void check_device_communicator() {
  static_assert(marginloss::is_device_communicator_v<Comm>,
                "marginloss::cuda: the communicator must be a DeviceCommunicator: rank(), size(), stream(), "
                "allreduce_max/allreduce_sum on device memory (float and double) and host_allreduce_sum(double*, Index) "
                "(distributed/communicator.hpp)");
}

// What the device needs of a policy: the contract, plain data (it is a kernel argument), and
// no per-class state in host memory.
template <typename P>
constexpr void check_device_policy() {
  static_assert(is_margin_policy_v<P>, "marginloss: P does not satisfy the policy contract (policies/common.hpp)");
  static_assert(std::is_trivially_copyable_v<P>,
                "marginloss::cuda: the policy is passed to the kernels by value and must be trivially copyable");
  static_assert(std::is_trivially_copyable_v<typename P::row_type>,
                "marginloss::cuda: the policy's row_type must be trivially copyable");
}

template <typename P>
inline constexpr bool has_class_values_v = marginloss::detail::has_class_values<P>::value;
template <typename P>
inline constexpr bool learnable_v = marginloss::detail::has_learnable_margins<P>::value;

// Throws policy P's message for a rejected per-class value (stored in the workspace by a forward).
template <typename P>
[[noreturn]] void fail_class_value_of(const unsigned char* policy_bytes, Index k, double value) {
  P policy;
  std::memcpy(static_cast<void*>(&policy), policy_bytes, sizeof(P));
  policy.fail_class_value(k, static_cast<typename P::value_type>(value));
}

template <typename L>
constexpr void check_label_type() {
  static_assert(std::is_integral_v<L> && !std::is_same_v<L, bool>,
                "marginloss::cuda: labels must be a device array of an integer type (int32_t or int64_t)");
}

inline void check_cublas_size(const char* what, Index v) {
  if (v > static_cast<Index>(INT_MAX))
    fail(what, " = ", v, " exceeds the 32-bit sizes of the cuBLAS API (at most ", INT_MAX, ")");
}

template <typename T>
inline void check_input(const char* name, const DeviceMatrix<const T>& m) {
  if (m.rows < 0 || m.cols < 0) fail(name, " is ", m.rows, "x", m.cols, ": sizes must be >= 0");
  if (m.ld < m.cols) fail(name, " has leading dimension ", m.ld, " but ", m.cols, " columns: ld must be >= cols");
  if (!m.data && m.rows > 0) fail(name, " is a null device pointer");
}

template <typename T>
inline void check_output(const char* name, const DeviceMatrix<T>& m, Index rows, Index cols) {
  check_output_shape(name, m.rows, m.cols, rows, cols);
  if (m.ld < m.cols) fail(name, " has leading dimension ", m.ld, " but ", m.cols, " columns: ld must be >= cols");
  if (!m.data && m.rows > 0) fail(name, " is a null device pointer");
  check_cublas_size(name, m.ld);
}

template <typename T>
[[noreturn]] inline void fail_bad_row(const char* name, const BadRow& bad) {
  marginloss::detail::fail_bad_row<T>(name, static_cast<Index>(bad.row), static_cast<Index>(bad.col), bad.value, bad.norm);
}

struct Engine {
  // Enqueues a forward on comm.stream(). Host-side argument errors throw here; device-side
  // ones are recorded in the workspace's status (read by check).
  // PP: the policy as the entry point received it; a stateful policy (has_state_hook) is updated
  // from the batch's target cosines when PP is a modifiable lvalue, which needs the batch mean on
  // the host before the row pass: only calls that may wait for the stream (may_wait) can.
  template <typename PP, typename L, typename Comm, typename P = std::decay_t<PP>, typename T = typename P::value_type>
  static void forward(PP&& policy, const DeviceMatrix<const T>& X, const DeviceMatrix<const T>& W,
                      Index class_offset, Index num_classes, const L* labels, Comm& comm, cublasHandle_t cublas,
                      const Options& options, Workspace<T>& ws, T* loss_out, bool may_wait) {
    check_device_policy<P>();
    check_label_type<L>();
    constexpr bool sharded = !is_local_v<Comm>;
    ws.holds_forward_ = false;
    ++ws.forward_serial_;
    const Index B = X.rows, D = X.cols, C = W.rows;
    Layout layout;
    std::exception_ptr error;
    try {
      policy.validate();
      marginloss::detail::check_state_hook<PP>(policy);
      if constexpr (marginloss::detail::has_state_hook<P>::value)
        if (policy.updates_in_forward() && !may_wait)
          fail(P::name, ": update_tau_in_forward = true needs the batch's mean target cosine on the host before the "
                        "row pass, and the asynchronous calls never wait for the device: use the synchronous call, or set "
                        "update_tau_in_forward = false and update tau yourself");
      check_shapes(B, D, num_classes, W.cols);
      check_shard_range(class_offset, C, num_classes);
      if constexpr (has_class_values_v<P>) marginloss::detail::check_class_count(policy, num_classes);
      check_input("X", X);
      check_input("W", W);
      if (!labels) fail("labels is a null device pointer");
      if (!cublas) fail("the cuBLAS handle is null");
      check_cublas_size("B", B);
      check_cublas_size("D", D);
      check_cublas_size("W's leading dimension", W.ld);
      const Index block = resolve_class_block<T>(options, B, C);
      check_cublas_size("the class block", block);
      layout = make_layout<T>(B, D, C, block, sharded);
      if (!ws.memory_) fail("the workspace has no device memory (construct it from the memory and its size)");
      const std::size_t needed = bytes_with_slack(layout);
      const std::size_t usable_needed =
          layout.total + static_cast<std::size_t>(static_cast<char*>(aligned_start(ws.memory_)) - static_cast<char*>(ws.memory_));
      if (ws.bytes_ < usable_needed)
        fail("the workspace has ", ws.bytes_, " bytes but this call needs ", needed, " (marginloss::cuda::",
             sharded ? "sharded_" : "", "workspace_bytes<T>(B, D, C, options))");
    } catch (const invalid_argument&) {
      error = std::current_exception();
    }
    {
      // Every rank agrees on B, D, C, the policy and the shard ranges before any collective, as
      // on the CPU (distributed/agreement.hpp); a single-GPU call exchanges nothing.
      CallRecord mine = call_record(static_cast<bool>(error), B, D, num_classes, class_offset, C);
      if constexpr (sharded)
        if (!error && comm.size() > 1)
          set_fingerprint(mine, marginloss::detail::policy_fingerprint(policy, num_classes, /*class_values_on_host=*/false));
      std::vector<double> records;
      agree_on_call(comm, mine, error, records);
    }

    const cudaStream_t stream = comm.stream();
    const Buffers<T> buf = carve<T>(ws.memory_, layout);
    DeviceState<T>* st = buf.state;
    if (!ws.state_ready_) {
      reset_state_kernel<T><<<1, 1, 0, stream>>>(st);
      MARGINLOSS_CUDA_CHECK_LAUNCH("reset_state_kernel");
      ws.state_ready_ = true;
    }
    labels_kernel<L><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(labels, B, num_classes, buf.labels,
                                                                       &st->call_label_row);
    MARGINLOSS_CUDA_CHECK_LAUNCH("labels_kernel");
    row_norms_kernel<T><<<blocks_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(X.data, B, D, X.ld, buf.x_norm, buf.x_inv,
                                                                                buf.xhat, &st->call_x_row);
    MARGINLOSS_CUDA_CHECK_LAUNCH("row_norms_kernel (X)");
    if (C > 0) {
      row_norms_kernel<T><<<blocks_for(C, kWarpsPerBlock), kThreads, 0, stream>>>(W.data, C, D, W.ld, nullptr, buf.w_inv,
                                                                                  nullptr, &st->call_w_row);
      MARGINLOSS_CUDA_CHECK_LAUNCH("row_norms_kernel (W)");
    }
    describe_errors_kernel<T, L><<<1, 1, 0, stream>>>(X.data, X.ld, W.data, W.ld, D, labels, num_classes, st);
    MARGINLOSS_CUDA_CHECK_LAUNCH("describe_errors_kernel");
    if constexpr (has_class_values_v<P>) {
      static_assert(sizeof(P) <= Workspace<T>::kPolicyBytes, "marginloss::cuda: policy too large for the workspace's record");
      class_values_kernel<P><<<blocks_for(num_classes, kThreads), kThreads, 0, stream>>>(policy, num_classes, &st->call_class);
      MARGINLOSS_CUDA_CHECK_LAUNCH("class_values_kernel");
      describe_class_error_kernel<P><<<1, 1, 0, stream>>>(policy, st);
      MARGINLOSS_CUDA_CHECK_LAUNCH("describe_class_error_kernel");
      std::memcpy(ws.policy_, static_cast<const void*>(&policy), sizeof(P));
      ws.fail_class_value_ = &fail_class_value_of<P>;
    }
    target_cosines_kernel<T><<<blocks_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(
        buf.xhat, B, D, W.data, W.ld, buf.w_inv, C, class_offset, buf.labels, buf.target, buf.row_max, buf.row_sum);
    MARGINLOSS_CUDA_CHECK_LAUNCH("target_cosines_kernel");
    comm.allreduce_sum(buf.target, B);
    if constexpr (marginloss::detail::has_state_hook<P>::value && marginloss::detail::modifiable_policy_v<PP>)
      if (policy.updates_in_forward()) {
        // The state is the policy's, passed to the kernels by value: its batch statistic comes
        // to the host first (one small copy and a wait; the sharded t_i are all-reduced).
        batch_mean_kernel<T><<<1, kThreads, 0, stream>>>(buf.target, B, &st->target_mean);
        MARGINLOSS_CUDA_CHECK_LAUNCH("batch_mean_kernel");
        double mean = 0;
        MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(&mean, &st->target_mean, sizeof mean, cudaMemcpyDeviceToHost, stream));
        MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream));
        policy.update_with_target_mean(mean);
      }

    {
      CublasScope scope(cublas, stream);
      for (Index j0 = 0; j0 < C; j0 += layout.block) {
        const Index nb = layout.block < C - j0 ? layout.block : C - j0;
        const Index segments = segments_of(nb, layout.segment);
        gemm_cosines(cublas, buf.xhat, B, D, W.data + j0 * W.ld, W.ld, nb, buf.cos);
        forward_block_kernel<P><<<dim3(static_cast<unsigned>(B), static_cast<unsigned>(segments)), kThreads, 0, stream>>>(
            policy, buf.cos, nb, layout.segment, segments, buf.w_inv + j0, buf.target, buf.x_norm, buf.labels,
            class_offset + j0, buf.part_max, buf.part_sum, buf.row_max, buf.row_sum);
        MARGINLOSS_CUDA_CHECK_LAUNCH("forward_block_kernel");
        if (segments > 1) {
          merge_segments_kernel<T><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(B, segments, buf.part_max, buf.part_sum,
                                                                                     buf.row_max, buf.row_sum);
          MARGINLOSS_CUDA_CHECK_LAUNCH("merge_segments_kernel");
        }
      }
    }
    if constexpr (sharded) {
      // Global max, then each rank rescales its sum to it before the sums are reduced.
      MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(buf.lse, buf.row_max, sizeof(T) * static_cast<std::size_t>(B),
                                            cudaMemcpyDeviceToDevice, stream));
      comm.allreduce_max(buf.lse, B);
      rescale_to_global_max_kernel<T><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(B, buf.lse, buf.row_max, buf.row_sum);
      MARGINLOSS_CUDA_CHECK_LAUNCH("rescale_to_global_max_kernel");
      comm.allreduce_sum(buf.row_sum, B);
    }
    loss_kernel<P><<<1, kThreads, 0, stream>>>(policy, B, buf.target, buf.x_norm, buf.labels, buf.row_max, buf.row_sum,
                                               buf.lse, st, loss_out);
    MARGINLOSS_CUDA_CHECK_LAUNCH("loss_kernel");
    if constexpr (learnable_v<P>) {
      regulariser_kernel<P><<<1, kThreads, 0, stream>>>(policy, B, num_classes, buf.labels, st, loss_out);
      MARGINLOSS_CUDA_CHECK_LAUNCH("regulariser_kernel");
    }
    if constexpr (sharded) comm.allreduce_sum(&st->failed, 1);

    ws.layout_ = layout;
    ws.batch_ = B;
    ws.dim_ = D;
    ws.num_classes_ = num_classes;
    ws.class_offset_ = class_offset;
    ws.local_classes_ = C;
    ws.holds_forward_ = true;
  }

  // Enqueues a backward on comm.stream(). The upstream gradient is grad_loss_device[0] when
  // that is not null (read on the device), else grad_loss.
  template <typename P, typename Comm, typename T = typename P::value_type>
  static void backward(const P& policy, const DeviceMatrix<const T>& W, Comm& comm, Workspace<T>& ws, T grad_loss,
                       const T* grad_loss_device, const DeviceMatrix<T>& dX, const DeviceMatrix<T>& dW,
                       cublasHandle_t cublas, T* dmargins = nullptr) {
    check_device_policy<P>();
    constexpr bool sharded = !is_local_v<Comm>;
    // A forward is consumed by one backward call, also by one that throws.
    const bool held = ws.holds_forward_;
    ws.holds_forward_ = false;
    std::exception_ptr error;
    try {
      if (!held) fail("backward() needs a forward() on the same workspace first (each forward is consumed once)");
      if (W.rows != ws.local_classes_ || W.cols != ws.dim_)
        fail("W is ", W.rows, "x", W.cols, " in backward() but was ", ws.local_classes_, "x", ws.dim_, " in forward()");
      check_input("W", W);
      check_output("dX", dX, ws.batch_, ws.dim_);
      check_output("dW", dW, ws.local_classes_, ws.dim_);
      if (!grad_loss_device) check_grad_loss(grad_loss);
      if (!cublas) fail("the cuBLAS handle is null");
      // The policy is the forward's (the Forward context) and dmargins' presence was checked
      // with the policy's type (cuda/loss.cuh).
    } catch (const invalid_argument&) {
      error = std::current_exception();
    }
    agree_on_errors(comm, error);

    const Index B = ws.batch_, D = ws.dim_, C = ws.local_classes_;
    const Layout& layout = ws.layout_;
    const Buffers<T> buf = carve<T>(ws.memory_, layout);
    DeviceState<T>* st = buf.state;
    const cudaStream_t stream = comm.stream();
    const bool one_block = layout.block >= C;
    const bool feature_norm = policy.scale_is_feature_norm();
    // Sharded: accumulate into the workspace (contiguous, for the all-reduce).
    T* acc = sharded ? buf.dx_partial : dX.data;
    const Index ldacc = sharded ? D : dX.ld;

    begin_backward_kernel<T><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(B, buf.dscale, grad_loss_device, grad_loss, st);
    MARGINLOSS_CUDA_CHECK_LAUNCH("begin_backward_kernel");
    {
      CublasScope scope(cublas, stream);
      for (Index j0 = 0; j0 < C; j0 += layout.block) {
        const Index nb = layout.block < C - j0 ? layout.block : C - j0;
        const Index segments = segments_of(nb, layout.segment);
        const T* Wb = W.data + j0 * W.ld;
        T* dWb = dW.data + j0 * dW.ld;
        if (!one_block) gemm_cosines(cublas, buf.xhat, B, D, Wb, W.ld, nb, buf.cos);
        backward_block_kernel<P><<<dim3(static_cast<unsigned>(B), static_cast<unsigned>(segments)), kThreads, 0, stream>>>(
            policy, buf.cos, nb, layout.segment, segments, !one_block, buf.w_inv + j0, buf.target, buf.x_norm, buf.labels,
            ws.class_offset_ + j0, buf.lse, B, st, feature_norm, buf.part_sum, buf.dscale);
        MARGINLOSS_CUDA_CHECK_LAUNCH("backward_block_kernel");
        if (feature_norm && segments > 1) {
          dscale_kernel<P><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(policy, B, segments, buf.part_sum, buf.x_norm,
                                                                             st, buf.dscale);
          MARGINLOSS_CUDA_CHECK_LAUNCH("dscale_kernel");
        }
        // buf.cos now holds G' = dL/dc / |w_j|.
        gemm_dx(cublas, buf.cos, B, nb, Wb, W.ld, D, j0 > 0, acc, ldacc);
        gemm_dw(cublas, buf.cos, B, nb, buf.xhat, D, dWb, dW.ld);
        project_w_kernel<T><<<blocks_for(nb, kWarpsPerBlock), kThreads, 0, stream>>>(dWb, dW.ld, Wb, W.ld, buf.w_inv + j0,
                                                                                    nb, D, st);
        MARGINLOSS_CUDA_CHECK_LAUNCH("project_w_kernel");
      }
    }
    if constexpr (sharded) {
      if (C == 0)
        MARGINLOSS_CUDA_CHECK(cudaMemsetAsync(buf.dx_partial, 0, sizeof(T) * static_cast<std::size_t>(B * D), stream));
      comm.allreduce_sum(buf.dx_partial, B * D);
      if (feature_norm) comm.allreduce_sum(buf.dscale, B);
    }
    project_x_kernel<T><<<blocks_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(acc, ldacc, dX.data, dX.ld, buf.xhat,
                                                                                buf.x_inv, buf.dscale, feature_norm, B, D, st);
    MARGINLOSS_CUDA_CHECK_LAUNCH("project_x_kernel");
    if constexpr (learnable_v<P>) {
      // dL/dm: every rank knows t_i and lse_i, so each computes the whole vector (as the CPU).
      const Index K = ws.num_classes_;
      MARGINLOSS_CUDA_CHECK(cudaMemsetAsync(dmargins, 0, sizeof(T) * static_cast<std::size_t>(K), stream));
      dmargins_kernel<P><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(policy, B, buf.target, buf.x_norm, buf.labels,
                                                                           buf.lse, st, dmargins);
      MARGINLOSS_CUDA_CHECK_LAUNCH("dmargins_kernel");
      const Index items = policy.regulariser_over_batch() ? B : K;
      regulariser_gradient_kernel<P><<<blocks_for(items, kThreads), kThreads, 0, stream>>>(policy, B, K, buf.labels, st,
                                                                                          dmargins);
      MARGINLOSS_CUDA_CHECK_LAUNCH("regulariser_gradient_kernel");
    }
  }

  // Waits for the stream and turns what the device recorded since the last check into an
  // exception (the flags are then cleared): this rank's forward errors (labels, X, W, the loss),
  // then another rank's (whose bad input may have made this rank's gradients non-finite through
  // the all-reduced dX), then this rank's backward errors (upstream gradient, overflow).
  // Returns the status (the loss of the last forward).
  // The loss of the last forward in device memory (the status block), or null before the
  // workspace's first forward.
  template <typename T>
  static const T* device_loss(Workspace<T>& ws) {
    if (!ws.state_ready_ || !ws.memory_) return nullptr;
    return &carve<T>(ws.memory_, ws.layout_).state->loss;
  }

  template <typename T>
  static DeviceState<T> check(Workspace<T>& ws, cudaStream_t stream) {
    DeviceState<T> s{};
    if (!ws.state_ready_) {
      MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream));
      return s;
    }
    DeviceState<T>* device_state = carve<T>(ws.memory_, ws.layout_).state;
    MARGINLOSS_CUDA_CHECK(cudaMemcpyAsync(&s, device_state, sizeof(s), cudaMemcpyDeviceToHost, stream));
    MARGINLOSS_CUDA_CHECK(cudaStreamSynchronize(stream));
    const bool input = s.bad_label_row != kNoRow || s.x.row != kNoRow || s.w.row != kNoRow || s.bad_class != kNoRow;
    const bool own = input || s.nonfinite_loss || s.bad_grad_loss || s.nonfinite_grad;
    if (!own && !(s.failed > 0)) return s;
    // Reported once: cleared before any later work on this workspace (stream order).
    reset_state_kernel<T><<<1, 1, 0, stream>>>(device_state);
    MARGINLOSS_CUDA_CHECK_LAUNCH("reset_state_kernel");
    ws.holds_forward_ = false;
    // In the CPU's order: the policy's per-class values, labels, X, W.
    if (s.bad_class != kNoRow && ws.fail_class_value_)
      ws.fail_class_value_(ws.policy_, static_cast<Index>(s.bad_class), s.bad_class_value);
    if (s.bad_label_row != kNoRow) {
      const auto row = static_cast<Index>(s.bad_label_row);
      const auto classes = static_cast<Index>(s.bad_label_classes);
      if (s.bad_label_unsigned) fail_label(row, s.bad_label_bits, classes);
      fail_label(row, static_cast<long long>(s.bad_label_bits), classes);
    }
    if (s.x.row != kNoRow) fail_bad_row<T>("X", s.x);
    if (s.w.row != kNoRow) fail_bad_row<T>("W", s.w);
    if (s.nonfinite_loss) fail_not_representable("the loss");
    if (s.failed > 0) fail_other_rank(s.failed);
    if (s.bad_grad_loss) check_grad_loss(s.bad_grad_loss_value);
    fail_not_representable("a gradient");
  }
};

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
