# Builds TARGET in BUILD_DIR, which must fail, with MESSAGE in the first line that reports an
# error (so the library's static_assert is what a user reads first).
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must be rejected at compile time")
endif()
string(REGEX MATCH "[^\n]*error:[^\n]*" first "${out}\n${err}")
string(FIND "${first}" "${MESSAGE}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the first error of ${TARGET} is not the library's message '${MESSAGE}':\n${first}")
endif()
message(STATUS "${TARGET}: rejected with: ${first}")
