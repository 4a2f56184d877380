// marginloss._C: the C++ policy from the Python arguments, one builder per policy, shared by the
// plain functions and the class_margins forms. Every member of the policy is an argument;
// enumerations arrive as their integer values (validate() rejects values outside them).
#pragma once

#include <marginloss/marginloss.hpp>

namespace marginloss_python {

namespace ml = marginloss;

template <typename E>
E to_enum(int v) {
  return static_cast<E>(v);
}

template <typename T>
ml::NormFace<T> make_normface(double s) {
  ml::NormFace<T> p;
  p.s = T(s);
  return p;
}

template <typename T>
ml::CosFace<T> make_cosface(double s, double m, bool conditional_margin) {
  ml::CosFace<T> p;
  p.s = T(s);
  p.m = T(m);
  p.conditional_margin = conditional_margin;
  return p;
}

template <typename T>
ml::ArcFace<T> make_arcface(double s, double m, int fallback, int gradient) {
  ml::ArcFace<T> p;
  p.s = T(s);
  p.m = T(m);
  p.fallback = to_enum<ml::Fallback>(fallback);
  p.gradient = to_enum<ml::Gradient>(gradient);
  return p;
}

template <typename T>
ml::CombinedMargin<T> make_combined_margin(double s, double m1, double m2, double m3, int fallback, int gradient) {
  ml::CombinedMargin<T> p;
  p.s = T(s);
  p.m1 = T(m1);
  p.m2 = T(m2);
  p.m3 = T(m3);
  p.fallback = to_enum<ml::Fallback>(fallback);
  p.gradient = to_enum<ml::Gradient>(gradient);
  return p;
}

template <typename T>
ml::SphereFace<T> make_sphereface(int m, double lambda, int scale_mode, double s) {
  ml::SphereFace<T> p;
  p.m = m;
  p.lambda = T(lambda);
  p.scale_mode = to_enum<ml::Scale>(scale_mode);
  p.s = T(s);
  return p;
}

template <typename T>
ml::SVSoftmax<T> make_sv_softmax(double s, double m, double t, int target, int fallback, int gradient) {
  ml::SVSoftmax<T> p;
  p.s = T(s);
  p.m = T(m);
  p.t = T(t);
  p.target = to_enum<ml::MarginTarget>(target);
  p.fallback = to_enum<ml::Fallback>(fallback);
  p.gradient = to_enum<ml::Gradient>(gradient);
  return p;
}

template <typename T>
ml::MVSoftmax<T> make_mv_softmax(double s, double m, double t, int target, int variant, int fallback,
                                 bool conditional_margin, int gradient) {
  ml::MVSoftmax<T> p;
  p.s = T(s);
  p.m = T(m);
  p.t = T(t);
  p.target = to_enum<ml::MarginTarget>(target);
  p.variant = to_enum<ml::MVVariant>(variant);
  p.fallback = to_enum<ml::Fallback>(fallback);
  p.conditional_margin = conditional_margin;
  p.gradient = to_enum<ml::Gradient>(gradient);
  return p;
}

template <typename T>
ml::CurricularFace<T> make_curricular_face(double s, double m, double tau, double momentum, int fallback, int gradient) {
  ml::CurricularFace<T> p;
  p.s = T(s);
  p.m = T(m);
  p.tau = T(tau);
  p.momentum = T(momentum);
  // The functional form takes tau as given; marginloss.CurricularFace updates its buffer itself.
  p.update_tau_in_forward = false;
  p.fallback = to_enum<ml::Fallback>(fallback);
  p.gradient = to_enum<ml::Gradient>(gradient);
  return p;
}

template <typename T>
ml::AMMSoftmax<T> make_amm_softmax(double s, double m, double m_h, int fallback, int gradient) {
  ml::AMMSoftmax<T> p;
  p.s = T(s);
  p.m = T(m);
  p.m_h = T(m_h);
  p.fallback = to_enum<ml::Fallback>(fallback);
  p.gradient = to_enum<ml::Gradient>(gradient);
  return p;
}

template <typename T>
ml::AdaptiveMargin<T> make_adaptive_margin(double s, double lambda_m, int scope) {
  ml::AdaptiveMargin<T> p;  // margins: a view of the tensor, set by marginloss_torch::MarginLoss
  p.s = T(s);
  p.lambda_m = T(lambda_m);
  p.scope = to_enum<ml::RegulariserScope>(scope);
  return p;
}

}  // namespace marginloss_python
