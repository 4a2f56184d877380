// The CUDA tests' policies, in one list that both translation units compile: test_cuda.cpp
// runs every policy of it against the CPU engine; gpu_runner.cu takes any of them as an
// AnyPolicy<T> (a variant of the list's types), so its entry points are compiled once per value
// type for every type of the list and no list of types is written anywhere else. Eigen-free
// (nvcc compiles it).
#pragma once

#include <marginloss/class_values.hpp>
#include <marginloss/policies/adaptive_margin.hpp>
#include <marginloss/policies/amm_softmax.hpp>
#include <marginloss/policies/arcface.hpp>
#include <marginloss/policies/combined_margin.hpp>
#include <marginloss/policies/cosface.hpp>
#include <marginloss/policies/curricular_face.hpp>
#include <marginloss/policies/mv_softmax.hpp>
#include <marginloss/policies/normface.hpp>
#include <marginloss/policies/sphereface.hpp>
#include <marginloss/policies/sv_softmax.hpp>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace mlcuda_test {

namespace ml = marginloss;
using Index = ml::Index;

// Per-class margins for C classes: vectors the per-class policies view (the runner copies them
// to the device). Deterministic, distinct per class, inside every base policy's range.
template <typename T>
struct PerClassMargins {
  std::vector<T> adaptive, cosine, angular;
  explicit PerClassMargins(Index C) {
    for (Index k = 0; k < C; ++k) {
      const double u = std::fmod(0.6180339887498949 * static_cast<double>(k + 1), 1.0);
      adaptive.push_back(static_cast<T>(0.3 + 0.1 * u));  // FaceX-Zoo's U(0.3, 0.4)
      cosine.push_back(static_cast<T>(0.15 + 0.3 * u));
      angular.push_back(static_cast<T>(0.2 + 0.4 * (1.0 - u)));
    }
  }
};

// Every policy and the variants that change its code path (fallbacks, gradient modes, scale
// modes, targets, variants, conditional margins), then AdaptiveMargin (both regulariser scopes)
// and ClassMargins over the bases with a margin `m` (additive cosine, additive angular with its
// fallback, a mining policy, CurricularFace), viewing `margins`. CurricularFace keeps its tau
// (update_tau_in_forward = false, the last member): each comparison runs one policy object on
// both engines.
template <typename T>
auto gpu_policies(const PerClassMargins<T>& margins) {
  using ml::Fallback;
  using ml::Gradient;
  return std::make_tuple(
      ml::NormFace<T>{16},
      ml::CosFace<T>{30, T(0.35)},
      ml::CosFace<T>{30, T(0.35), true},
      ml::ArcFace<T>{64, T(0.5)},
      ml::ArcFace<T>{64, T(0.5), Fallback::easy_margin},
      ml::ArcFace<T>{64, T(0.5), Fallback::none},
      ml::ArcFace<T>{64, T(0.5), Fallback::hard_threshold, Gradient::straight_through},
      ml::CombinedMargin<T>{64, 1, T(0.3), T(0.2)},
      ml::CombinedMargin<T>{30, T(1.5), T(0.1), T(0.05), Fallback::hard_threshold},
      ml::CombinedMargin<T>{30, T(0.9), T(0.4), T(0.15), Fallback::easy_margin, Gradient::straight_through},
      ml::SphereFace<T>{4, 5},
      ml::SphereFace<T>{2, 0},
      ml::SphereFace<T>{5, 1},
      ml::SphereFace<T>{3, 0, ml::Scale::fixed, 30},
      ml::SphereFace<T>{1, 5, ml::Scale::fixed, 20},
      ml::SVSoftmax<T>{30, T(0), T(1.2)},
      ml::SVSoftmax<T>{30, T(0.35), T(1.2)},
      ml::SVSoftmax<T>{30, T(0.5), T(1.2), ml::MarginTarget::additive_angular, Fallback::hard_threshold},
      ml::MVSoftmax<T>{32, T(0.35), T(1.2)},
      ml::MVSoftmax<T>{32, T(0.35), T(1.12), ml::MarginTarget::additive_cosine, ml::MVVariant::adaptive,
                       Fallback::easy_margin},
      ml::MVSoftmax<T>{32, T(0.35), T(1.12), ml::MarginTarget::additive_cosine, ml::MVVariant::fixed, Fallback::none,
                       true},
      ml::MVSoftmax<T>{32, T(0.5), T(1.2), ml::MarginTarget::additive_angular, ml::MVVariant::fixed},
      ml::CurricularFace<T>{64, T(0.5), T(0.3), T(0.99), Fallback::hard_threshold, Gradient::exact, false},
      ml::CurricularFace<T>{64, T(0.5), T(0.6), T(0.99), Fallback::easy_margin, Gradient::exact, false},
      ml::AMMSoftmax<T>{64, T(0.5), T(0.1)},
      ml::AMMSoftmax<T>{64, T(0.4), T(0.3), Fallback::none},
      ml::AdaptiveMargin<T>{30, margins.adaptive, T(70)},
      ml::AdaptiveMargin<T>{32, margins.adaptive, T(5), ml::RegulariserScope::batch_classes},
      ml::class_margins(ml::CosFace<T>{30, T(0)}, margins.cosine),
      ml::class_margins(ml::ArcFace<T>{64, T(0.5)}, margins.angular),
      ml::class_margins(ml::MVSoftmax<T>{32, T(0.35), T(1.2), ml::MarginTarget::additive_angular, ml::MVVariant::fixed},
                        margins.angular),
      ml::class_margins(ml::CurricularFace<T>{64, T(0.5), T(0.3), T(0.99), Fallback::hard_threshold, Gradient::exact, false},
                        margins.angular));
}

// fn(policy) for every policy of the list, in order.
template <typename T, typename Fn>
void for_each_gpu_policy(const PerClassMargins<T>& margins, Fn&& fn) {
  std::apply([&](const auto&... policy) { (fn(policy), ...); }, gpu_policies(margins));
}

namespace detail {
template <typename... Ps>
struct TypeList {};
// The distinct types of Ps, in order of first appearance, as a std::variant.
template <typename Seen, typename... Ps>
struct DistinctVariant;
template <typename... Seen>
struct DistinctVariant<TypeList<Seen...>> {
  using type = std::variant<Seen...>;
};
template <typename... Seen, typename P, typename... Ps>
struct DistinctVariant<TypeList<Seen...>, P, Ps...>
    : DistinctVariant<std::conditional_t<(std::is_same_v<P, Seen> || ...), TypeList<Seen...>, TypeList<Seen..., P>>, Ps...> {};
template <typename Tuple>
struct VariantOf;
template <typename... Ps>
struct VariantOf<std::tuple<Ps...>> : DistinctVariant<TypeList<>, Ps...> {};
}  // namespace detail

// A policy of any type of the list (value type T): what the runner's entry points take.
template <typename T>
using AnyPolicy = typename detail::VariantOf<decltype(gpu_policies(std::declval<const PerClassMargins<T>&>()))>::type;

}  // namespace mlcuda_test
