// marginloss::cuda: what the kernels report to the host -- bad inputs, the loss, overflow --
// in one small struct at the start of the workspace, copied back in one transfer. The error
// flags are sticky: set by any call, cleared only after the host has read and reported them
// (Engine::check), so an asynchronous call's error is never lost to a later call.
#pragma once

#include <cuda_runtime.h>

#include "../../config.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// "No bad row": the kernels keep the first (smallest) bad index with atomicMin.
inline constexpr unsigned long long kNoRow = ~0ull;

// The first rejected row of X or W and what the host's message needs about it.
struct BadRow {
  unsigned long long row;  // kNoRow when every row is accepted
  long long col;           // first non-finite entry, or -1
  double value;            // its value
  double norm;             // the row's norm (computed in double)
};

template <typename T>
struct DeviceState {
  // This call's first bad rows and label (atomicMin by the checking kernels), moved into the
  // recorded errors below by describe_errors_kernel and reset there for the next call.
  unsigned long long call_x_row;
  unsigned long long call_w_row;
  unsigned long long call_label_row;
  unsigned long long call_class;      // first per-class value the policy rejects (margins.cuh)
  // The recorded errors: the first call's that had one, kept until reported.
  BadRow x;
  BadRow w;
  unsigned long long bad_label_row;   // first label outside [0, num_classes), or kNoRow
  unsigned long long bad_label_bits;  // its value (two's complement bits of a signed label)
  long long bad_label_classes;        // the class count it was checked against
  int bad_label_unsigned;             // 1 when the labels were of an unsigned type
  unsigned long long bad_class;       // first class whose per-class value is rejected, or kNoRow
  double bad_class_value;             // that value
  double failed;                      // 1 when a forward error is recorded; summed over ranks when sharded
  T loss;                             // loss of the last forward (batch mean + regulariser)
  T regulariser;                      // the margins' regulariser R included in loss, else 0
  double regulariser_classes;         // |J| of R (for its gradient)
  double target_mean;                 // batch mean of the target cosines (the state hook's statistic)
  T grad_loss;                        // upstream gradient of the last backward
  T bad_grad_loss_value;              // a non-finite upstream gradient, for the message
  int nonfinite_loss;
  int nonfinite_grad;
  int bad_grad_loss;
};

// One thread: no error recorded (a new workspace, or after the host reported the errors).
template <typename T>
__global__ void reset_state_kernel(DeviceState<T>* state) {
  state->call_x_row = kNoRow;
  state->call_w_row = kNoRow;
  state->call_label_row = kNoRow;
  state->call_class = kNoRow;
  state->x = {kNoRow, -1, 0.0, 0.0};
  state->w = {kNoRow, -1, 0.0, 0.0};
  state->bad_label_row = kNoRow;
  state->bad_label_bits = 0;
  state->bad_label_classes = 0;
  state->bad_label_unsigned = 0;
  state->bad_class = kNoRow;
  state->bad_class_value = 0.0;
  state->failed = 0;
  state->loss = T(0);
  state->regulariser = T(0);
  state->regulariser_classes = 0.0;
  state->target_mean = 0.0;
  state->grad_loss = T(1);
  state->bad_grad_loss_value = T(0);
  state->nonfinite_loss = 0;
  state->nonfinite_grad = 0;
  state->bad_grad_loss = 0;
}

}  // namespace detail
}  // namespace cuda
MARGINLOSS_NAMESPACE_END
