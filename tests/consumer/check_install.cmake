# Installs marginloss into a scratch prefix the way README.md's library-only install does,
# then configures, builds and runs the consumer project (this directory) against it:
#
#   1. find_package(marginloss CONFIG REQUIRED) with MPI made unfindable
#      (CMAKE_DISABLE_FIND_PACKAGE_MPI): must configure, build and run;
#   2. COMPONENTS mpi with MPI unfindable: must FAIL, naming the mpi component;
#   3. COMPONENTS mpi with MPI findable: must configure and build (the library build found MPI);
#      when the library was built without MPI, COMPONENTS mpi must fail with "built without";
#   4. COMPONENTS of a part this installation lacks (blas, unless built with it) and an unknown
#      component: must FAIL;
#   4b. COMPONENTS onednn: must configure, build and run with oneDNN's products when the library
#      build had oneDNN, must FAIL ("built without") otherwise;
#   5. add_subdirectory() of the source tree: must configure, build and run.
#
# Arguments (-D): SOURCE_DIR, WORK_DIR, CONSUMER_DIR, GENERATOR, and the library build's
# MARGINLOSS_MPI, MARGINLOSS_OPENMP, MARGINLOSS_BLAS and MARGINLOSS_ONEDNN (ON when that build
# provides marginloss::onednn; the installed package provides what that build provides).
file(REMOVE_RECURSE ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

# run_fails(<expected text> <command>...): the command must fail and print <expected text>.
function(run_fails expected)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "succeeded but should have failed: ${ARGN}\n${out}\n${err}")
  endif()
  string(FIND "${out}${err}" "${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "failed as it should, but without '${expected}': ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "failed as expected (${expected}): ${ARGN}")
endfunction()

foreach(var MARGINLOSS_MPI MARGINLOSS_OPENMP MARGINLOSS_BLAS MARGINLOSS_ONEDNN)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_install.cmake: pass -D${var}=<the library build's value>")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/lib -G ${GENERATOR}
    -DMARGINLOSS_BUILD_TESTS=OFF -DMARGINLOSS_BUILD_EXAMPLES=OFF -DMARGINLOSS_BUILD_BENCHMARKS=OFF
    -DMARGINLOSS_DOCS=OFF -DMARGINLOSS_MPI=${MARGINLOSS_MPI} -DMARGINLOSS_OPENMP=${MARGINLOSS_OPENMP}
    -DMARGINLOSS_BLAS=${MARGINLOSS_BLAS} -DMARGINLOSS_ONEDNN=${MARGINLOSS_ONEDNN} -DCMAKE_INSTALL_PREFIX=${prefix})
run(${CMAKE_COMMAND} --install ${WORK_DIR}/lib)
file(GLOB config_dir LIST_DIRECTORIES true ${prefix}/*/cmake/marginloss)
if(NOT EXISTS "${config_dir}/marginlossConfig.cmake")
  message(FATAL_ERROR "no marginlossConfig.cmake under ${prefix}/*/cmake/marginloss")
endif()

function(consumer name)
  run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/${name} -G ${GENERATOR} ${ARGN})
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/${name})
endfunction()
set(no_mpi -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)

# 1. Only Eigen is needed: MPI not findable.
consumer(installed -DCMAKE_PREFIX_PATH=${prefix} ${no_mpi})
run(${WORK_DIR}/installed/consumer)

# 2, 3. The mpi component.
if(EXISTS ${config_dir}/marginloss-mpi-targets.cmake)
  run_fails("component 'mpi': MPI (C++) was not found"
    ${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/mpi_missing -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} ${no_mpi} -DMARGINLOSS_CONSUMER_COMPONENTS=mpi)
  consumer(mpi -DCMAKE_PREFIX_PATH=${prefix} -DMARGINLOSS_CONSUMER_COMPONENTS=mpi)
else()
  message(STATUS "the library build has no MPI (MARGINLOSS_MPI=${MARGINLOSS_MPI}): COMPONENTS mpi must fail")
  run_fails("component 'mpi': this installation was built without it"
    ${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/mpi_missing -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DMARGINLOSS_CONSUMER_COMPONENTS=mpi)
endif()

# 4. A component this installation lacks, and one that does not exist.
if(NOT EXISTS ${config_dir}/marginloss-blas-targets.cmake)
  run_fails("component 'blas': this installation was built without it"
    ${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/blas_missing -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DMARGINLOSS_CONSUMER_COMPONENTS=blas)
endif()
if(MARGINLOSS_ONEDNN)
  consumer(onednn -DCMAKE_PREFIX_PATH=${prefix} -DMARGINLOSS_CONSUMER_COMPONENTS=onednn)
  run(${WORK_DIR}/onednn/consumer_onednn)
else()
  run_fails("component 'onednn': this installation was built without it"
    ${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/onednn_missing -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DMARGINLOSS_CONSUMER_COMPONENTS=onednn)
endif()
run_fails("component 'nosuch': unknown component"
  ${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/unknown -G ${GENERATOR}
  -DCMAKE_PREFIX_PATH=${prefix} -DMARGINLOSS_CONSUMER_COMPONENTS=nosuch)

# 5. The source tree as a subdirectory.
consumer(subdir -DMARGINLOSS_SOURCE_DIR=${SOURCE_DIR})
run(${WORK_DIR}/subdir/consumer)
