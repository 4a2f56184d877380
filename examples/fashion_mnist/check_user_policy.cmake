# The demo's user-written policy (SignedCosineMargin, through the public policy contract) at
# m = 0 and m = 0.1 must train exactly like the library's NormFace and CosFace (same function,
# same seed, same run): every printed metric equal. Run with
#   cmake -DDEMO=<fashion_mnist> -DDATA=<dir> -DOUT=<dir> -P check_user_policy.cmake
execute_process(
  COMMAND ${DEMO} --quick --only normface,cosface --margin-sweep 0,0.1 --data ${DATA} --out ${OUT}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 77)
  message("Fashion-MNIST not installed: skipped")
  # CTest's SKIP_REGULAR_EXPRESSION below turns this into a skip.
  return()
endif()
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fashion_mnist failed (${rc}):\n${out}\n${err}")
endif()
set(metrics "AUC [0-9.]+  TAR@1e-2 [0-9.]+  TAR@1e-3 [0-9.]+  closed acc [0-9.]+")
foreach(pair "normface;m=\\+0" "cosface;m=\\+0\\.1")
  list(GET pair 0 library)
  list(GET pair 1 user)
  if(NOT out MATCHES "  ${library} +(${metrics})")
    message(FATAL_ERROR "no metrics line for ${library}:\n${out}")
  endif()
  set(expected "${CMAKE_MATCH_1}")
  if(NOT out MATCHES "  ${user} +(${metrics})")
    message(FATAL_ERROR "no metrics line for the margin sweep's ${user}:\n${out}")
  endif()
  if(NOT CMAKE_MATCH_1 STREQUAL expected)
    message(FATAL_ERROR "the user policy's ${user}: ${CMAKE_MATCH_1}\n${library} (library): ${expected}")
  endif()
  string(REPLACE "\\" "" shown "${user}")
  message("${library} and the user policy's ${shown} agree: ${expected}")
endforeach()
