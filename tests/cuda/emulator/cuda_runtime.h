// TEST EMULATOR, NOT A CUDA IMPLEMENTATION: stands in for the CUDA toolkit's cuda_runtime.h in
// the `cuda_emulated` test (see emulator.hpp). The CUDA language support (dim3, __global__,
// __syncthreads, warp collectives, ...) and the runtime API subset the backend uses.
#pragma once

#include "cuda_runtime_api.h"
