# TEST EMULATOR (see emulator.hpp). cmake -DSOURCE_DIR=<include dir> -DOUTPUT_DIR=<dir>
#   -DRUNNER=<tests/cuda/gpu_runner.cu> -DRUNNER_OUTPUT=<file.cpp> -P rewrite_launches.cmake
#
# Copies the headers under SOURCE_DIR/marginloss to OUTPUT_DIR/marginloss and RUNNER to
# RUNNER_OUTPUT, rewriting every CUDA launch (the only syntax g++ cannot compile) into a call
# of the emulator:
#   kernel<Args><<<grid, block, shared_bytes, stream>>>(arguments)
#   ::mlcuda_emulator::launch(kernel<Args>, grid, block, shared_bytes, stream)(arguments)
# Line numbers are kept, and in the headers a #line directive names the original file, so
# diagnostics and __FILE__ point at the sources (not in RUNNER_OUTPUT, the compiled file: g++
# takes a main file renamed by #line for another file, -Wsubobject-linkage). A launch this cannot rewrite (a kernel name with nested
# template arguments, text between >>> and its arguments) stops the build with its file.
foreach(var SOURCE_DIR OUTPUT_DIR RUNNER RUNNER_OUTPUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "rewrite_launches.cmake: ${var} is not set")
  endif()
endforeach()

function(rewrite_file input output line_directive)
  file(READ "${input}" text)
  string(REGEX MATCHALL "<<<" opens "${text}")
  list(LENGTH opens launches)
  if(launches GREATER 0)
    string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_:]*(<[^<>;(){}]*>)?)[ \t]*<<<" "::mlcuda_emulator::launch(\\1, "
           text "${text}")
    string(REGEX REPLACE ">>>([ \t\r\n]*)\\(" ")\\1(" text "${text}")
    string(REGEX MATCHALL "::mlcuda_emulator::launch\\(" rewritten "${text}")
    list(LENGTH rewritten count)
    if(NOT count EQUAL launches OR text MATCHES "<<<|>>>")
      message(FATAL_ERROR "rewrite_launches.cmake: ${input}: ${launches} CUDA launches, ${count} rewritten; "
                          "write them as kernel<Args><<<config>>>(arguments) with Args free of nested <...>")
    endif()
  endif()
  if(line_directive)
    set(text "#line 1 \"${input}\"\n${text}")
  endif()
  file(WRITE "${output}" "${text}")
endfunction()

file(GLOB_RECURSE headers RELATIVE "${SOURCE_DIR}" "${SOURCE_DIR}/marginloss/*")
file(REMOVE_RECURSE "${OUTPUT_DIR}/marginloss")
foreach(header IN LISTS headers)
  rewrite_file("${SOURCE_DIR}/${header}" "${OUTPUT_DIR}/${header}" ON)
endforeach()
rewrite_file("${RUNNER}" "${RUNNER_OUTPUT}" OFF)
