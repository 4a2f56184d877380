// The faults the CUDA tests inject, in one place: the list (Fault), the bad inputs each writes
// (inject) and the one way to run one on the backend (run_with_fault). A fault test names the
// fault and compares what the GPU call threw with the CPU engine's message on the same inputs:
//
//   gt::Problem<float> p = ...;                         // the clean inputs
//   gt::Error gpu = gt::run_with_fault(policy, p, f);   // injects f into its copy, makes f's call
//   gt::inject(f, p);                                   // the CPU reference's copy: the same bad inputs
//
// The fault of a bad policy (an invalid hyper-parameter, a per-class margin out of range, a
// scale that overflows the loss) lies in the policy given, the same object for both engines:
// the policy_* faults inject nothing and say where it must be found and by which call. A
// sharded fault is injected into the problem given to run_gpu_sharded, each rank reporting
// what it threw.
#pragma once

#include "gpu_runner.hpp"

#include <marginloss/distributed/class_range.hpp>

#include <cstdint>
#include <limits>

namespace mlcuda_test {

enum class Fault {
  // Found on the host before any CUDA call (no GPU needed): the runner passes the problem's host
  // arrays where device memory is expected, a null stream and a fake cuBLAS handle, and the
  // policy as given, to forward_backward(..., Execution) (int32 labels) unless said otherwise.
  small_workspace,       // a workspace 256 bytes smaller than workspace_bytes
  no_workspace,          // a default-constructed Workspace
  w_columns,             // W with D + 1 columns
  empty_batch,           // X with 0 rows
  x_leading_dimension,   // X's leading dimension D - 1
  null_labels,           // null int64 labels
  null_cublas,           // a null cuBLAS handle
  negative_block,        // Options::class_block = -1
  dmargins_flipped,      // Gradients with dmargins for a policy without learnable margins, without for one with
  shard_outside,         // forward_backward with ml::Shard{3, C, comm} and C - 1 rows of W
  shard_other_stream,    // forward_backward with a Shard whose comm.stream() is not the Execution's stream
  shard_other_stream_async,  // the same by forward(..., Async, Shard)
  policy_on_host,        // nothing injected: the policy given is invalid (forward_backward)
  policy_on_host_async,  // nothing injected: forward(..., Async) with a modifiable copy of the policy given
  // Bad inputs found on the device by forward_backward (int32 labels unless said otherwise).
  label_too_large,  // labels[1] = C
  label_negative,   // labels[2] = -3, int64 labels
  zero_x_row,       // X row 2 = 0
  nan_in_x,         // X(1, 3) = NaN
  bad_w_rows,       // W(4, 2) = NaN and W row 6 = 0: the first, row 4, is reported
  huge_x_row,       // X row 1 scaled by 1e31 (float: a norm out of range)
  // Calls the device rejects.
  async_label,             // labels[0] = C; forward(Async), backward(fwd, device gradient): nothing thrown until
                           // check_errors()
  unchecked_async,         // labels[0] = C for a forward(Async) left unchecked; the valid forward(Execution) that
                           // follows (clean labels) reports it, once: forward_backward then succeeds
  nan_grad_host,           // forward(), backward(fwd, grad_loss = NaN)
  nan_grad_device,         // forward(Async), backward(fwd, a NaN gradient in device memory), check_errors()
  nan_grad_device_sync,    // forward(Execution), backward(fwd, a NaN gradient in device memory): thrown by backward
  backward_twice,          // forward(), backward(), backward()
  stale_forward,           // f1 = forward(), f2 = forward() on the same workspace, backward(f1): thrown; then
                           // backward(f2) succeeds (the check consumes nothing)
  dx_shape,                // forward(), backward() with a dX of B - 1 rows
  backward_dmargins_flipped,  // forward(), backward() with dmargins as dmargins_flipped
  async_loss,              // clean inputs: fwd = forward(Async), fwd.loss()
  policy_on_device,        // nothing injected: the policy given is rejected on the device (forward_backward)
  policy_on_device_async,  // the same by forward_backward(..., Async): nothing thrown until check_errors()
  // Sharded (inject only: run_gpu_sharded over 2 ranks makes the call).
  nan_in_second_shard,  // W(offset of rank 1 of 2, 0) = NaN: the first row of the second rank's shard
};

// Whether the fault's calls need a device (the host faults run without a GPU).
constexpr bool needs_device(Fault f) { return f >= Fault::label_too_large; }

// Whether the fault's call passes int64 labels.
constexpr bool int64_labels(Fault f) { return f == Fault::label_negative; }

// Writes the fault's bad inputs into `p` (nothing for the faults of the call or of the policy).
template <typename T>
void inject(Fault f, Problem<T>& p) {
  const auto x = [&](Index i, Index k) -> T& { return p.X[static_cast<std::size_t>(i * p.D + k)]; };
  const auto w = [&](Index j, Index k) -> T& { return p.W[static_cast<std::size_t>(j * p.D + k)]; };
  const T nan = std::numeric_limits<T>::quiet_NaN();
  switch (f) {
    case Fault::label_too_large: p.labels[1] = p.C; break;
    case Fault::label_negative: p.labels[2] = -3; break;
    case Fault::zero_x_row:
      for (Index k = 0; k < p.D; ++k) x(2, k) = T(0);
      break;
    case Fault::nan_in_x: x(1, 3) = nan; break;
    case Fault::bad_w_rows:
      w(4, 2) = nan;
      for (Index k = 0; k < p.D; ++k) w(6, k) = T(0);
      break;
    case Fault::huge_x_row:
      for (Index k = 0; k < p.D; ++k) x(1, k) *= T(1e31);
      break;
    case Fault::async_label:
    case Fault::unchecked_async: p.labels[0] = p.C; break;
    case Fault::nan_in_second_shard: w(ml::even_class_range(p.C, 2, 1).offset, 0) = nan; break;
    default: break;
  }
}

// Runs fault f (not a sharded one) with `policy` on `problem` (the runner injects f into its own
// copy): what the call threw (thrown = false if nothing).
template <typename T>
Error run_with_fault(const AnyPolicy<T>& policy, const Problem<T>& problem, Fault f);

}  // namespace mlcuda_test
