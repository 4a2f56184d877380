# Finds NCCL (nccl.h, libnccl) and provides the imported target NCCL::NCCL. Used by the build
# (cmake/MarginlossCuda.cmake) and, installed beside marginlossConfig.cmake, by the package's
# `nccl` component, so that the exported marginloss::nccl names NCCL::NCCL instead of the
# build machine's paths.
#
# Searches the CUDA toolkit's directories (CUDAToolkit_INCLUDE_DIRS, CUDAToolkit_LIBRARY_DIR:
# call find_package(CUDAToolkit) first), /usr/local/cuda and the system's. Override with the
# cache variables MARGINLOSS_NCCL_INCLUDE_DIR and MARGINLOSS_NCCL_LIBRARY. An NCCL::NCCL that
# already exists (from another package) is used as it is.
#
# Sets MARGINLOSS_NCCL_FOUND. Input: MARGINLOSS_NCCL_IMPORTED_GLOBAL (make the target global).
if(TARGET NCCL::NCCL)
  set(MARGINLOSS_NCCL_FOUND TRUE)
  return()
endif()

find_path(MARGINLOSS_NCCL_INCLUDE_DIR nccl.h
  HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include
  DOC "Directory of nccl.h")
find_library(MARGINLOSS_NCCL_LIBRARY nccl
  HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64
  DOC "The NCCL library (libnccl)")

if(MARGINLOSS_NCCL_INCLUDE_DIR AND MARGINLOSS_NCCL_LIBRARY
   AND EXISTS "${MARGINLOSS_NCCL_INCLUDE_DIR}/nccl.h" AND EXISTS "${MARGINLOSS_NCCL_LIBRARY}")
  set(MARGINLOSS_NCCL_FOUND TRUE)
  if(MARGINLOSS_NCCL_IMPORTED_GLOBAL)
    add_library(NCCL::NCCL UNKNOWN IMPORTED GLOBAL)
  else()
    add_library(NCCL::NCCL UNKNOWN IMPORTED)
  endif()
  set_target_properties(NCCL::NCCL PROPERTIES
    IMPORTED_LOCATION "${MARGINLOSS_NCCL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MARGINLOSS_NCCL_INCLUDE_DIR}")
else()
  set(MARGINLOSS_NCCL_FOUND FALSE)
endif()
