// marginloss: what a forward records so that its backward can check it gets the same call.
//
// A backward computes its gradients from the forward's workspace and from the policy and W of
// its Forward context (loss.hpp), so it cannot be handed another policy type, other parameters
// or another W, and the context's workspace serial rules out another forward's buffers. What
// the context cannot freeze is the memory a per-class policy views: an optimiser step may change
// the margins in place between the two calls. The forward therefore records a fingerprint of
// the policy's behaviour -- the bits of its margined target, slope and non-target logits at
// fixed probe cosines and labels, and of its scale, and every per-class value -- which the
// backward compares before it reads anything. Not detected: W's *contents* changed in place
// (an optimiser step before backward); documented at backward().
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../policies/common.hpp"
#include "../value_slope.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

class Fingerprint {
 public:
  template <typename T>
  void add(T v) {
    static_assert(std::is_trivially_copyable_v<T>, "fingerprint of a trivially copyable value");
    unsigned char bytes[sizeof(T)];
    std::memcpy(bytes, &v, sizeof(T));
    for (unsigned char b : bytes) h_ = (h_ ^ b) * 0x100000001b3ull;  // FNV-1a
  }
  std::uint64_t value() const { return h_; }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ull;
};

// The policy's behaviour at fixed probes, for `classes` classes (the labels probed are the
// first, middle and last class, so per-class margins of those classes count). With
// class_values_on_host = false (the CUDA backend: the values are device memory) a policy with
// per-class values is fingerprinted by their count and its scale only, never reading them.
template <typename P, typename T = typename P::value_type>
std::uint64_t policy_fingerprint(const P& policy, Index classes, bool class_values_on_host = true) {
  // Cosines across the range, with points near -1 where the angular fallbacks switch
  // (cos(pi - m) for small m) and near +1.
  constexpr double probes[] = {-1.0, -0.9999, -0.999, -0.99, -0.95, -0.8, -0.5, -0.2, 0.0,
                               0.1,  0.3,     0.5,    0.7,   0.85,  0.95, 0.99, 0.999, 1.0};
  constexpr double non_target_probes[] = {-0.6, 0.2, 0.65, 0.9, 0.98};
  Fingerprint f;
  // Per-class values (margins) are a view of the caller's memory, which may change between a
  // forward and its backward: every value counts (O(C), host memory: CPU engines only).
  if constexpr (has_class_values<P>::value) {
    const auto values = policy.class_values();
    f.add(values.size);
    if (!class_values_on_host) {
      f.add(policy.scale_is_feature_norm());
      f.add(policy.scale(T(1.75)));
      return f.value();
    }
    for (Index k = 0; k < values.size; ++k) f.add(values[k]);
  }
  f.add(policy.scale_is_feature_norm());
  f.add(policy.scale(T(1.75)));
  f.add(policy.scale(T(0.5)));
  const Index labels[] = {0, classes / 2, classes > 0 ? classes - 1 : 0};
  for (const Index y : labels) {
    for (const double t : probes) {
      const auto r = policy.row(static_cast<T>(t), y);
      f.add(r.target.value);
      f.add(r.target.slope);
      if constexpr (!P::plain_non_target)
        for (const double c : non_target_probes) {
          const ValueSlope<T> h = policy.non_target(static_cast<T>(c), r);
          f.add(h.value);
          f.add(h.slope);
        }
    }
  }
  return f.value();
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
