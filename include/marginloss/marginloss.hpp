// marginloss: margin-based normalised-softmax losses with exact analytic gradients.
// The umbrella header; each part below also stands alone.
#pragma once

#include "config.hpp"
#include "errors.hpp"
#include "loss.hpp"
#include "policies/adaptive_margin.hpp"
#include "policies/amm_softmax.hpp"
#include "distributed/communicator.hpp"
#include "distributed/sharded.hpp"
#include "policies/arcface.hpp"
#include "policies/combined_margin.hpp"
#include "policies/common.hpp"
#include "policies/cosface.hpp"
#include "policies/curricular_face.hpp"
#include "policies/mv_softmax.hpp"
#include "policies/normface.hpp"
#include "policies/sphereface.hpp"
#include "policies/sv_softmax.hpp"
#include "products.hpp"
#include "types.hpp"
#include "value_slope.hpp"
#include "workspace.hpp"
