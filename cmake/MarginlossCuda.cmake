# marginloss::cuda: the CUDA backend (include/marginloss/cuda/*.cuh), and marginloss::nccl, the
# NCCL communicator of its class-sharded loss (include/marginloss/cuda/nccl.cuh).
#
# Opt-in (MARGINLOSS_CUDA, default OFF). Programs that include the .cuh headers are compiled
# by nvcc (CUDA language) and link
#
#   target_link_libraries(app PRIVATE marginloss::cuda)          # CUDA::cudart, CUDA::cublas
#   target_link_libraries(app PRIVATE marginloss::nccl)          # + NCCL::NCCL (links marginloss::cuda)
#
# (from an installed package: find_package(marginloss CONFIG REQUIRED COMPONENTS cuda) or
# COMPONENTS nccl). marginloss::cuda links the shared CUDA runtime (CUDA::cudart): set the
# consuming target's CUDA_RUNTIME_LIBRARY to Shared (or CMAKE_CUDA_RUNTIME_LIBRARY=Shared) so
# that the program does not also get CMake's default static runtime.
#
# Options (declared in the top-level CMakeLists.txt):
#   MARGINLOSS_CUDA            ON: find nvcc (FATAL_ERROR with instructions when missing).
#   CMAKE_CUDA_ARCHITECTURES   when marginloss is the top-level project and none is given
#                              (neither -DCMAKE_CUDA_ARCHITECTURES nor the CUDAARCHS environment
#                              variable): "80;90" (A100, H100). Under add_subdirectory() the
#                              parent project's setting (or CMake's default) is left alone.
#   MARGINLOSS_NCCL            AUTO (default: provide marginloss::nccl when nccl.h and libnccl
#                              are found, cmake/MarginlossFindNCCL.cmake), ON (required) or OFF.
#   MARGINLOSS_BUILD_CUDA_BENCHMARKS  build bench/cuda (default: MARGINLOSS_BUILD_BENCHMARKS).
#
# Sets MARGINLOSS_USES_CUDA / MARGINLOSS_USES_NCCL and provides marginloss_set_cuda_runtime(target)
# for this project's CUDA executables.
#
# Expects MARGINLOSS_TOP_LEVEL and MARGINLOSS_INSTALL to be defined (install into the export
# sets marginloss_cuda_targets / marginloss_nccl_targets and append `cuda` / `nccl` to
# MARGINLOSS_COMPONENTS).
set(MARGINLOSS_USES_CUDA OFF)
set(MARGINLOSS_USES_NCCL OFF)

function(marginloss_set_cuda_runtime target)
  # marginloss::cuda links CUDA::cudart (shared); one runtime per program.
  set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY Shared)
endfunction()

if(MARGINLOSS_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR
      "marginloss: MARGINLOSS_CUDA=ON but CMake found no CUDA compiler (nvcc). Install the CUDA "
      "toolkit (NVIDIA's cuda-toolkit packages, which install /usr/local/cuda/bin/nvcc, or your "
      "distribution's nvidia-cuda-toolkit) and either put nvcc on PATH, or configure with "
      "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc (or set the CUDACXX environment variable). "
      "Configure with -DMARGINLOSS_CUDA=OFF to build without the CUDA backend.")
  endif()
  # Only a default, and only for marginloss's own build: a value the user gives (cache entry or
  # CUDAARCHS, which enable_language(CUDA) reads from CMake 3.20 on) or a parent project's is
  # never replaced.
  if(MARGINLOSS_TOP_LEVEL AND NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND "$ENV{CUDAARCHS}" STREQUAL "")
    set(CMAKE_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures to compile for (default 80;90: A100, H100)")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(MARGINLOSS_USES_CUDA ON)

  add_library(marginloss_cuda INTERFACE)
  add_library(marginloss::cuda ALIAS marginloss_cuda)
  set_target_properties(marginloss_cuda PROPERTIES EXPORT_NAME cuda)
  target_link_libraries(marginloss_cuda INTERFACE marginloss::marginloss CUDA::cudart CUDA::cublas)
  target_compile_features(marginloss_cuda INTERFACE cuda_std_17)
  message(STATUS "marginloss: marginloss::cuda with CUDA ${CUDAToolkit_VERSION} (${CMAKE_CUDA_COMPILER}), "
                 "architectures ${CMAKE_CUDA_ARCHITECTURES}")
  if(MARGINLOSS_INSTALL)
    install(TARGETS marginloss_cuda EXPORT marginloss_cuda_targets)
    list(APPEND MARGINLOSS_COMPONENTS cuda)
  endif()

  # NCCL: nccl.h and libnccl as the imported target NCCL::NCCL (global, so that a parent
  # project linking marginloss::nccl sees it too).
  string(TOUPPER "${MARGINLOSS_NCCL}" marginloss_nccl_mode)
  if(marginloss_nccl_mode STREQUAL "AUTO" OR MARGINLOSS_NCCL)
    set(MARGINLOSS_NCCL_IMPORTED_GLOBAL TRUE)
    include(MarginlossFindNCCL)
    unset(MARGINLOSS_NCCL_IMPORTED_GLOBAL)
    if(MARGINLOSS_NCCL_FOUND)
      set(MARGINLOSS_USES_NCCL ON)
      add_library(marginloss_nccl INTERFACE)
      add_library(marginloss::nccl ALIAS marginloss_nccl)
      set_target_properties(marginloss_nccl PROPERTIES EXPORT_NAME nccl)
      target_link_libraries(marginloss_nccl INTERFACE marginloss::cuda NCCL::NCCL)
      message(STATUS "marginloss: marginloss::nccl with ${MARGINLOSS_NCCL_LIBRARY}")
      if(MARGINLOSS_INSTALL)
        install(TARGETS marginloss_nccl EXPORT marginloss_nccl_targets)
        list(APPEND MARGINLOSS_COMPONENTS nccl)
      endif()
    elseif(marginloss_nccl_mode STREQUAL "AUTO")
      message(STATUS "marginloss: NCCL not found (nccl.h, libnccl): no marginloss::nccl "
                     "(install libnccl-dev, or set MARGINLOSS_NCCL_INCLUDE_DIR / MARGINLOSS_NCCL_LIBRARY)")
    else()
      message(FATAL_ERROR "marginloss: MARGINLOSS_NCCL=ON but nccl.h / libnccl were not found; set "
                          "MARGINLOSS_NCCL_INCLUDE_DIR and MARGINLOSS_NCCL_LIBRARY, or MARGINLOSS_NCCL=OFF")
    endif()
  endif()
  unset(marginloss_nccl_mode)
endif()
