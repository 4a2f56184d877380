# marginloss::mpi: the MPI communicator of the class-sharded loss (marginloss/distributed/mpi.hpp).
#
# A target of its own that programs using ml::MPICommunicator link IN ADDITION to (or instead
# of: it links it) marginloss::marginloss:
#
#   target_link_libraries(app PRIVATE marginloss::mpi)
#
# MARGINLOSS_MPI (declared in the top-level CMakeLists.txt):
#   AUTO (default for the top-level project): provide the target when find_package(MPI) finds
#        a C++ MPI, otherwise say so and go on (the MPI tests then report "skipped").
#   ON   : MPI is required.
#   OFF  (default when marginloss is added with add_subdirectory()): no MPI target.
#
# Sets MARGINLOSS_USES_MPI (ON when the target exists; it is then installed as the package
# component `mpi`, whose find_package(marginloss COMPONENTS mpi) finds MPI) and, for tests
# and examples run under mpiexec, MARGINLOSS_MPIEXEC_FLAGS: the flags placed after the process
# count (MPIEXEC_PREFLAGS, plus --oversubscribe for Open MPI so that 4 ranks run on a 2-core
# machine).
#
# Expects MARGINLOSS_INSTALL to be defined (install into the export set marginloss_mpi_targets
# and append `mpi` to MARGINLOSS_COMPONENTS).
set(MARGINLOSS_USES_MPI OFF)
set(MARGINLOSS_MPIEXEC_FLAGS "")
string(TOUPPER "${MARGINLOSS_MPI}" marginloss_mpi_mode)
if(NOT marginloss_mpi_mode MATCHES "^(AUTO|ON|OFF|YES|NO|TRUE|FALSE|1|0)$")
  message(FATAL_ERROR "MARGINLOSS_MPI = '${MARGINLOSS_MPI}': use AUTO, ON or OFF")
endif()

if(marginloss_mpi_mode STREQUAL "AUTO" OR MARGINLOSS_MPI)
  if(marginloss_mpi_mode STREQUAL "AUTO")
    find_package(MPI COMPONENTS CXX)
  else()
    find_package(MPI REQUIRED COMPONENTS CXX)
  endif()

  if(MPI_CXX_FOUND)
    set(MARGINLOSS_USES_MPI ON)
    add_library(marginloss_mpi INTERFACE)
    add_library(marginloss::mpi ALIAS marginloss_mpi)
    set_target_properties(marginloss_mpi PROPERTIES EXPORT_NAME mpi)
    target_link_libraries(marginloss_mpi INTERFACE marginloss::marginloss MPI::MPI_CXX)

    set(MARGINLOSS_MPIEXEC_FLAGS ${MPIEXEC_PREFLAGS})
    if(MPIEXEC_EXECUTABLE)
      execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version
        OUTPUT_VARIABLE marginloss_mpiexec_version ERROR_VARIABLE marginloss_mpiexec_version
        RESULT_VARIABLE marginloss_mpiexec_rc TIMEOUT 20)
      if(marginloss_mpiexec_version MATCHES "Open MPI|OpenRTE")
        list(APPEND MARGINLOSS_MPIEXEC_FLAGS --oversubscribe)
      endif()
      unset(marginloss_mpiexec_version)
      unset(marginloss_mpiexec_rc)
    endif()
    message(STATUS "marginloss: marginloss::mpi with MPI ${MPI_CXX_VERSION} (${MPIEXEC_EXECUTABLE})")

    if(MARGINLOSS_INSTALL)
      install(TARGETS marginloss_mpi EXPORT marginloss_mpi_targets)
      list(APPEND MARGINLOSS_COMPONENTS mpi)
    endif()
  else()
    message(STATUS "marginloss: MPI (C++) not found: no marginloss::mpi, the MPI tests will be skipped "
                   "(install e.g. libopenmpi-dev openmpi-bin, or set MARGINLOSS_MPI=OFF)")
  endif()
endif()
unset(marginloss_mpi_mode)
