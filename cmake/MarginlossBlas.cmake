# marginloss::blas: Eigen's matrix products through an external BLAS (EIGEN_USE_BLAS).
#
# Opt-in (MARGINLOSS_BLAS, default OFF) and a target of its own that consumers link IN
# ADDITION to marginloss::marginloss:
#
#   target_link_libraries(app PRIVATE marginloss::marginloss marginloss::blas)
#
# EIGEN_USE_BLAS changes every Eigen product of the translation units that see it, so it is
# never forced through marginloss::marginloss; all translation units of one program that
# share Eigen objects should agree on it (link marginloss::blas to all of them).
#
# MARGINLOSS_BLAS_VENDOR is passed to find_package(BLAS) as BLA_VENDOR (default OpenBLAS; on
# Debian libopenblas-dev, whose libopenblas.so is the pthreads or the OpenMP build depending
# on the installed variant, see bench/README.md). Empty: whatever BLAS CMake finds.
#
# MARGINLOSS_BLAS and MARGINLOSS_BLAS_VENDOR are declared in the top-level CMakeLists.txt.
# Consumers of an installed package ask for the target with
# find_package(marginloss CONFIG REQUIRED COMPONENTS blas), which finds the same BLAS vendor.
#
# Expects MARGINLOSS_INSTALL to be defined (install into the export set marginloss_blas_targets
# and append `blas` to MARGINLOSS_COMPONENTS).

if(MARGINLOSS_BLAS)
  if(MARGINLOSS_BLAS_VENDOR)
    set(BLA_VENDOR "${MARGINLOSS_BLAS_VENDOR}")
  endif()
  find_package(BLAS REQUIRED)
  unset(BLA_VENDOR)

  add_library(marginloss_blas INTERFACE)
  add_library(marginloss::blas ALIAS marginloss_blas)
  set_target_properties(marginloss_blas PROPERTIES EXPORT_NAME blas)
  target_compile_definitions(marginloss_blas INTERFACE EIGEN_USE_BLAS)
  target_link_libraries(marginloss_blas INTERFACE BLAS::BLAS)
  message(STATUS "marginloss: marginloss::blas uses ${BLAS_LIBRARIES}")

  if(MARGINLOSS_INSTALL)
    install(TARGETS marginloss_blas EXPORT marginloss_blas_targets)
    list(APPEND MARGINLOSS_COMPONENTS blas)
  endif()
endif()
