# Finds oneDNN (dnnl.h, libdnnl) and provides the imported target DNNL::dnnl. Used by the build
# (cmake/MarginlossOneDnn.cmake) and, installed beside marginlossConfig.cmake, by the package's
# `onednn` component, so that the exported marginloss::onednn names DNNL::dnnl instead of the
# build machine's paths.
#
# oneDNN's own CMake package (find_package(dnnl CONFIG): Debian's libdnnl-dev ships it, and it
# looks for OpenCL, a dependency of Debian's build) comes first; without it, dnnl.h and libdnnl
# are looked for directly (override with the cache variables MARGINLOSS_DNNL_INCLUDE_DIR and
# MARGINLOSS_DNNL_LIBRARY). A DNNL::dnnl that already exists is used as it is.
#
# Sets MARGINLOSS_DNNL_FOUND. Input: MARGINLOSS_DNNL_QUIET (QUIET or empty).
if(TARGET DNNL::dnnl)
  set(MARGINLOSS_DNNL_FOUND TRUE)
  return()
endif()

find_package(dnnl CONFIG ${MARGINLOSS_DNNL_QUIET})
if(TARGET DNNL::dnnl)
  set(MARGINLOSS_DNNL_FOUND TRUE)
  return()
endif()

find_path(MARGINLOSS_DNNL_INCLUDE_DIR dnnl.h PATH_SUFFIXES oneapi/dnnl DOC "Directory of dnnl.h (oneDNN)")
find_library(MARGINLOSS_DNNL_LIBRARY dnnl DOC "The oneDNN library (libdnnl)")
if(MARGINLOSS_DNNL_INCLUDE_DIR AND MARGINLOSS_DNNL_LIBRARY
   AND EXISTS "${MARGINLOSS_DNNL_INCLUDE_DIR}/dnnl.h" AND EXISTS "${MARGINLOSS_DNNL_LIBRARY}")
  set(MARGINLOSS_DNNL_FOUND TRUE)
  add_library(DNNL::dnnl UNKNOWN IMPORTED)
  set_target_properties(DNNL::dnnl PROPERTIES
    IMPORTED_LOCATION "${MARGINLOSS_DNNL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MARGINLOSS_DNNL_INCLUDE_DIR}")
else()
  set(MARGINLOSS_DNNL_FOUND FALSE)
endif()
