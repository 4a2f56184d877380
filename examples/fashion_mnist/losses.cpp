#include "losses.hpp"

#include <stdexcept>
#include <utility>

#include "heads.hpp"

namespace fashion_mnist {

bool is_mining(const std::string& loss) {
  return loss == "mvsoftmax" || loss == "curricularface" || loss == "svsoftmax" || loss == "ammsoftmax" ||
         loss == "adaptiveface";
}

Trained train_loss(const std::string& loss, const Subset& data, int classes, const TrainConfig& cfg,
                   const LossParams& o) {
  if (loss == "softmax") return train(loss, SoftmaxHead{}, data, classes, cfg);
  if (loss == "normface") return train(loss, MarginHead<ml::NormFace<float>>{{}, {o.s}, {}, {}}, data, classes, cfg);
  if (loss == "cosface")
    return train(loss, MarginHead<ml::CosFace<float>>{{}, {o.s, o.cos_m}, {}, {}}, data, classes, cfg);
  if (loss == "arcface") {
    ml::ArcFace<float> policy{o.s, o.arc_m};
    if (o.arc_straight) policy.gradient = ml::Gradient::straight_through;
    return train(loss, MarginHead<ml::ArcFace<float>>{{}, policy, {}, {}}, data, classes, cfg);
  }
  if (loss == "sphereface") {
    // Lambda annealed from 1000 over this run's steps (a new schedule for every run).
    ml::LambdaSchedule schedule;
    ml::SphereFace<float> policy{o.sphere_m, 1000.f};
    if (o.sphere_fixed) {
      policy.scale_mode = ml::Scale::fixed;
      policy.s = o.s;
    }
    MarginHead<ml::SphereFace<float>> head{{}, policy, {}, {}};
    head.on_step = [&schedule](ml::SphereFace<float>& p) { p.lambda = static_cast<float>(schedule.step()); };
    return train(loss, std::move(head), data, classes, cfg);
  }
  if (loss == "mvsoftmax") {  // MV-AM-Softmax, adaptive
    ml::MVSoftmax<float> p;
    p.s = o.s;
    p.m = o.cos_m;
    p.t = o.mv_t;
    return train(loss, MarginHead<ml::MVSoftmax<float>>{{}, p, {}, {}}, data, classes, cfg);
  }
  if (loss == "curricularface") {
    ml::CurricularFace<float> p;
    p.s = o.s;
    p.m = o.arc_m;
    return train(loss, MarginHead<ml::CurricularFace<float>>{{}, p, {}, {}}, data, classes, cfg);
  }
  if (loss == "svsoftmax") {  // SV-Softmax proper, m = 0 (with m > 0 it is MV-AM adaptive)
    ml::SVSoftmax<float> p;
    p.s = o.s;
    p.t = o.mv_t;
    return train(loss, MarginHead<ml::SVSoftmax<float>>{{}, p, {}, {}}, data, classes, cfg);
  }
  if (loss == "ammsoftmax") {
    ml::AMMSoftmax<float> p;
    p.s = o.s;
    p.m = o.arc_m;
    p.m_h = o.m_h;
    return train(loss, MarginHead<ml::AMMSoftmax<float>>{{}, p, {}, {}}, data, classes, cfg);
  }
  if (loss == "adaptiveface") return train(loss, AdaptiveHead(o.s, o.cos_m, o.lambda_m, classes), data, classes, cfg);
  throw std::runtime_error("unknown loss " + loss);
}

Trained train_signed_margin(const std::string& name, float s, float m, const Subset& data, int classes,
                            const TrainConfig& cfg) {
  return train(name, MarginHead<SignedCosineMargin>{{}, {s, m}, {}, {}}, data, classes, cfg);
}

}  // namespace fashion_mnist
