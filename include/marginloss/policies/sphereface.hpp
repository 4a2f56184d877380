// SphereFace / A-Softmax (Liu et al., CVPR 2017): the multiplicative angular margin
// (docs/formulas.md §4), with the lambda blending of the official training code.
//   psi(theta) = (-1)^k cos(m theta) - 2k,  theta in [k pi/m, (k+1) pi/m]
//   z_iy = S_i (lambda t + psi(theta)) / (1 + lambda),  z_ij = S_i c_ij,
//   S_i = |x_i| (official: features are not normalised) or a fixed s.
#pragma once

#include <cmath>

#include "../detail/math.hpp"
#include "../errors.hpp"
#include "common.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// Where the logits' scale comes from.
enum class Scale {
  feature_norm,  ///< S_i = |x_i|: the original SphereFace (Caffe) training
  fixed,         ///< S_i = s: normalised features, as in the later papers
};

namespace detail {
template <>
struct enum_info<Scale> {
  static constexpr int count = 2;
  static constexpr const char* name = "Scale";
};

// psi_m(t) and dpsi/dt without arccos: cos(m theta) = T_m(t) (Chebyshev), and k is counted
// from comparisons with cos(j pi / m), never from floor(m theta / pi), which returns k = m at
// t = -1 and flips the slope's sign there (docs/formulas.md §9). The derivative holds k constant;
// at the k-boundaries T_m' vanishes, so psi is C^1 there.
template <typename T>
MARGINLOSS_HD inline ValueSlope<T> sphereface_psi(int m, T t) {
  int k = 0;
  for (int j = 1; j < m; ++j) k += (t <= T(std::cos(j * pi / m))) ? 1 : 0;
  const T t2 = t * t;
  T cheb, dcheb;
  switch (m) {
    case 1: cheb = t; dcheb = T(1); break;
    case 2: cheb = T(2) * t2 - T(1); dcheb = T(4) * t; break;
    case 3: cheb = (T(4) * t2 - T(3)) * t; dcheb = T(12) * t2 - T(3); break;
    case 4: cheb = (T(8) * t2 - T(8)) * t2 + T(1); dcheb = (T(32) * t2 - T(16)) * t; break;
    default: cheb = ((T(16) * t2 - T(20)) * t2 + T(5)) * t; dcheb = (T(80) * t2 - T(60)) * t2 + T(5); break;
  }
  const T sign = (k % 2 == 0) ? T(1) : T(-1);
  return {sign * cheb - T(2 * k), sign * dcheb};
}

}  // namespace detail

/// SphereFace / A-Softmax (Liu et al., CVPR 2017): the multiplicative angular margin with the
/// lambda blending of the official training code (docs/formulas.md §4):
/// psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m],
/// z_iy = S_i (lambda t + psi(theta)) / (1 + lambda), z_ij = S_i c_ij, S_i = |x_i| or s.
template <typename T>
struct SphereFace {
  using value_type = T;  ///< float or double
  using row_type = detail::TargetRow<T>;  ///< once-per-row terms: the target f(t_i) and its slope
  static constexpr bool plain_non_target = true;  ///< h(c) = c: the engines skip non_target()
  static constexpr const char* name = "SphereFace";  ///< the policy's name in error messages

  int m = 4;  ///< integer margin in 1..5; the paper uses 4
  /// Blend weight of the plain cosine in the target logit. The official training anneals it
  /// with LambdaSchedule from 1000 down to 5; 5 (its floor) is the default. 0 is the paper's
  /// pure psi.
  T lambda = T(5);
  Scale scale_mode = Scale::feature_norm;  ///< S_i = |x_i| (the official training) or the fixed s
  T s = T(30);  ///< used only with Scale::fixed

  /// Throws invalid_argument unless m is in 1..5, lambda >= 0, scale_mode is a Scale value and,
  /// with Scale::fixed, s > 0.
  void validate() const {
    if (m < 1 || m > 5) detail::fail(name, ": m = ", m, " must be an integer in 1..5");
    detail::require_non_negative(name, "lambda", lambda);
    detail::check_enum(name, "scale_mode", scale_mode);
    if (scale_mode == Scale::fixed) detail::require_positive(name, "s", s);
  }

  /// f(t) = (lambda t + psi(theta)) / (1 + lambda), slope (lambda + psi'(t)) / (1 + lambda);
  /// cos(m theta) is the Chebyshev polynomial T_m(t) and k is counted by comparisons, so no
  /// arccos is taken (docs/formulas.md §9).
  MARGINLOSS_HD row_type row(T t, Index /*label*/) const {
    const ValueSlope<T> psi = detail::sphereface_psi(m, t);
    const T w = T(1) / (T(1) + lambda);
    return {{(lambda * t + psi.value) * w, (lambda + psi.slope) * w}};
  }
  /// h(c) = c, slope 1.
  MARGINLOSS_HD ValueSlope<T> non_target(T c, const row_type&) const { return {c, T(1)}; }
  /// S_i = |x_i| (Scale::feature_norm) or s (Scale::fixed).
  MARGINLOSS_HD T scale(T x_norm) const { return scale_mode == Scale::feature_norm ? x_norm : s; }
  /// True with Scale::feature_norm: then dS_i/dx_i = x_i / |x_i| enters dX.
  MARGINLOSS_HD bool scale_is_feature_norm() const { return scale_mode == Scale::feature_norm; }
};

/// The lambda annealing of the official SphereFace training (margin_inner_product_layer and
/// its prototxt): at every forward the iteration counter is incremented first, then
///   lambda = max(lambda_min, base * (1 + gamma * iteration)^(-power)).
/// It is plain state the caller owns: save `iteration` with the checkpoint, or a resumed run
/// restarts at lambda(1) = 893.
struct LambdaSchedule {
  double base = 1000.0;     ///< lambda at iteration 0 (the prototxt's base)
  double gamma = 0.12;      ///< decay rate of the inverse schedule (prototxt)
  double power = 1.0;       ///< exponent of the inverse schedule (prototxt)
  double lambda_min = 5.0;  ///< floor of lambda (prototxt)
  long long iteration = 0;  ///< training steps so far; save it with the checkpoint

  /// max(lambda_min, base (1 + gamma iter)^(-power)).
  double lambda_at(long long iter) const {
    const double v = base * std::pow(1.0 + gamma * static_cast<double>(iter), -power);
    return v > lambda_min ? v : lambda_min;
  }
  /// The value for the current iteration, without advancing.
  double lambda() const { return lambda_at(iteration); }
  /// Advances one training step and returns its lambda (Caffe order: increment, then compute).
  double step() { return lambda_at(++iteration); }
};

MARGINLOSS_NAMESPACE_END
