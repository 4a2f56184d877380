// The losses the demo compares, by name, with their hyper-parameters (the same network,
// optimiser and schedule for every loss):
//   defaults s = 8 for every fixed-scale policy; CosFace m = 0.1; ArcFace m = 0.2 with the straight-through gradient;
//   SphereFace m = 4, scale = feature norm, lambda annealed 1000 -> 5 (official schedule);
//   MV-AM m = 0.1, t = 1.2; SV-Softmax m = 0, t = 1.2; CurricularFace m = 0.2; AMM m = 0.2, m_h = 0.1;
//   AdaptiveFace margins start at the CosFace margin, lambda_m = 1.
// Chosen with --validate (README.md): a small scale and small margins, the setting in which the
// margin losses came closest to softmax.
#pragma once
#include <string>

#include "data.hpp"
#include "train.hpp"

namespace fashion_mnist {

inline constexpr const char* kLosses[10] = {"softmax",   "normface",       "cosface",   "arcface",    "sphereface",
                                            "mvsoftmax", "curricularface", "svsoftmax", "ammsoftmax", "adaptiveface"};

// The mining and adaptive losses (left out of --quick runs unless --mining).
bool is_mining(const std::string& loss);

struct LossParams {
  float s = 8.f, cos_m = 0.1f, arc_m = 0.2f, mv_t = 1.2f, m_h = 0.1f;
  float lambda_m = 1.f;
  int sphere_m = 4;
  // ArcFace's gradient: straight-through (the margin's derivative taken as 1, as insightface's
  // arcface_torch computes it) by default; --arc-grad exact for the true derivative, which
  // keeps pulling every sample towards its class direction (README.md).
  bool arc_straight = true;
  bool sphere_fixed = false;  // SphereFace's scale: s instead of the feature norm
};

// Trains with the loss named `loss` (one of kLosses); throws std::runtime_error for another name.
Trained train_loss(const std::string& loss, const Subset& data, int classes, const TrainConfig& cfg,
                   const LossParams& p);

// The margin sweep's user-written policy (heads.hpp's SignedCosineMargin): s (t - m), either sign.
Trained train_signed_margin(const std::string& name, float s, float m, const Subset& data, int classes,
                            const TrainConfig& cfg);

}  // namespace fashion_mnist
