// marginloss::cuda: the CUDA backend, umbrella header (compile with nvcc; link
// marginloss::cuda). The policies below run unchanged on the device; AdaptiveMargin and
// ClassMargins view per-class margins in device memory (their ClassValues must point there).
// The NCCL communicator is opt-in: <marginloss/cuda/nccl.cuh>.
#pragma once

#include "../policies/adaptive_margin.hpp"
#include "../policies/amm_softmax.hpp"
#include "../policies/arcface.hpp"
#include "../policies/combined_margin.hpp"
#include "../policies/common.hpp"
#include "../policies/cosface.hpp"
#include "../policies/curricular_face.hpp"
#include "../policies/mv_softmax.hpp"
#include "../policies/normface.hpp"
#include "../policies/sphereface.hpp"
#include "../policies/sv_softmax.hpp"
#include "check.cuh"
#include "loss.cuh"
#include "sharded.cuh"
#include "types.cuh"
#include "workspace.cuh"
