# marginloss::onednn: the CPU engine's matrix products through oneDNN's dnnl_sgemm (float; double
# products stay with Eigen, oneDNN 2.x having no double GEMM). A target of its own that
# consumers link instead of (or besides) marginloss::marginloss, which it links:
#
#   target_link_libraries(app PRIVATE marginloss::onednn)
#
# It defines MARGINLOSS_PRODUCTS_ONEDNN (include/marginloss/detail/products.hpp) and links
# DNNL::dnnl (Debian 12: libdnnl-dev, oneDNN 2.6, built on GNU OpenMP like the engine). All
# translation units of one program that call the loss should link it (the engine is inline).
#
# MARGINLOSS_ONEDNN (declared in the top-level CMakeLists.txt): AUTO provides the target when
# oneDNN is found, ON requires it, OFF skips it. Consumers of an installed package ask for it
# with find_package(marginloss CONFIG REQUIRED COMPONENTS onednn).
#
# Expects MARGINLOSS_INSTALL to be defined (install into the export set marginloss_onednn_targets,
# append `onednn` to MARGINLOSS_COMPONENTS). Sets MARGINLOSS_USES_ONEDNN.
set(MARGINLOSS_USES_ONEDNN OFF)
if(NOT MARGINLOSS_ONEDNN STREQUAL "OFF")
  set(MARGINLOSS_DNNL_QUIET "")
  if(MARGINLOSS_ONEDNN STREQUAL "AUTO")
    set(MARGINLOSS_DNNL_QUIET QUIET)
  endif()
  include(MarginlossFindDnnl)
  if(MARGINLOSS_DNNL_FOUND)
    set(MARGINLOSS_USES_ONEDNN ON)
  elseif(MARGINLOSS_ONEDNN STREQUAL "ON")
    message(FATAL_ERROR "marginloss: MARGINLOSS_ONEDNN=ON but oneDNN was not found (Debian: apt-get install "
                        "libdnnl-dev; or set MARGINLOSS_DNNL_INCLUDE_DIR and MARGINLOSS_DNNL_LIBRARY)")
  else()
    message(STATUS "marginloss: oneDNN not found (Debian: libdnnl-dev): marginloss::onednn is not provided")
  endif()
endif()

if(MARGINLOSS_USES_ONEDNN)
  add_library(marginloss_onednn INTERFACE)
  add_library(marginloss::onednn ALIAS marginloss_onednn)
  set_target_properties(marginloss_onednn PROPERTIES EXPORT_NAME onednn)
  target_compile_definitions(marginloss_onednn INTERFACE MARGINLOSS_PRODUCTS_ONEDNN)
  target_link_libraries(marginloss_onednn INTERFACE marginloss::marginloss DNNL::dnnl)
  message(STATUS "marginloss: marginloss::onednn uses oneDNN ${dnnl_VERSION} ${MARGINLOSS_DNNL_LIBRARY}")

  if(MARGINLOSS_INSTALL)
    install(TARGETS marginloss_onednn EXPORT marginloss_onednn_targets)
    install(FILES ${CMAKE_CURRENT_LIST_DIR}/MarginlossFindDnnl.cmake DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/marginloss)
    list(APPEND MARGINLOSS_COMPONENTS onednn)
  endif()
endif()
