// marginloss: what the two backends' forward contexts (loss.hpp's Forward, cuda/loss.cuh's
// cuda::Forward) share, and the outputs check of their backward. Eigen-free and CUDA-free.
#pragma once

#include <cstdint>
#include <exception>

#include "../config.hpp"
#include "../distributed/agreement.hpp"
#include "../errors.hpp"
#include "../policies/common.hpp"

// Learnable margins need every class's margin on every rank and a regulariser over all of them;
// the class-sharded loss (either backend) does not provide that.
#define MARGINLOSS_SHARDED_NO_LEARNABLE_MARGINS                                                          \
  "marginloss: learnable margins (AdaptiveMargin) are not supported by the class-sharded loss; fixed " \
  "per-class margins (ml::class_margins) are"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// The constructor key of the backends' Forward contexts: only their forward() makes one.
struct ForwardKey {};

// A forward's context: the policy as the forward used it (a copy, so that CurricularFace's tau
// stays the forward's), the workspace holding the forward's buffers and the workspace's forward
// serial at that time. The serial is what lets a backward tell that a later forward on the same
// workspace has overwritten those buffers; the policy and W come from here, so a backward
// cannot be handed another policy or W than its forward.
template <typename P, typename WS>
class ForwardContext {
 public:
  using policy_type = P;
  using value_type = typename P::value_type;

  /// The policy as the forward used it (CurricularFace: tau after this batch's update).
  const P& policy() const { return policy_; }
  /// The workspace that holds this forward's buffers.
  WS& workspace() const { return *ws_; }

 protected:
  ForwardContext(const P& policy, WS& ws) : policy_(policy), ws_(&ws), serial_(ws.forward_serial()) {}

  // Throws when another forward has run on the workspace since this one (a backward after
  // that would read the other forward's buffers). A consumed forward is the engine's message.
  void check_current() const {
    if (ws_->holds_forward() && ws_->forward_serial() != serial_)
      fail("backward() got a forward whose workspace has since run another forward(): one backward per forward, "
           "before the workspace's next forward");
  }

 private:
  P policy_;
  WS* ws_;
  std::uint64_t serial_;
};

// A policy with learnable margins whose backward gets no dmargins would train margins that
// never get a gradient; dmargins for any other policy is a mistake of the same kind.
// `memory`: where dmargins lives, for the message ("" on the CPU, ", device memory" on CUDA).
template <typename P>
void check_dmargins_given(bool given, const char* memory) {
  if constexpr (has_learnable_margins<P>::value) {
    if (!given)
      fail(P::name, " has learnable margins: pass Gradients{dX, dW, dmargins} (C entries", memory,
           ") so they get their gradient, or use ml::class_margins(ml::CosFace<T>{s, 0}, margins) to keep them fixed");
  } else if (given) {
    fail(P::name, " has no learnable margins: dmargins must be empty (Gradients{dX, dW})");
  }
}

// The backward's own argument checks (outputs, a stale forward), run before the engine. On one
// process a failure throws at once; sharded, every rank must learn of it before the engine's
// collectives, or the other ranks would wait in them: the failing rank takes part in the
// backward's one agreement (agree_on_errors, the engine's first collective) and throws there,
// the others throw "another rank rejected its input" at theirs.
template <typename Comm, typename Checks>
void check_backward_arguments(Comm* comm, Checks&& checks) {
  std::exception_ptr error;
  try {
    checks();
  } catch (const invalid_argument&) {
    error = std::current_exception();
  }
  if (!error) return;
  if (comm) agree_on_errors(*comm, error);
  std::rethrow_exception(error);
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
