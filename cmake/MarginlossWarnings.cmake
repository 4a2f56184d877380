# Warnings for marginloss's own targets (tests, examples, benchmarks); never forced on users
# of the library target. C++ sources get -Wall -Wextra -Wpedantic; CUDA sources (nvcc) get
# the host compiler's -Wall -Wextra (not -Wpedantic, which flags nvcc's generated line
# directives) and, with MARGINLOSS_WERROR, nvcc's own warnings as errors too.
function(marginloss_set_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra;-Wpedantic>")
    if(MARGINLOSS_WERROR)
      target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Werror>")
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA")
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>")
    if(MARGINLOSS_WERROR)
      target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings;-Xcompiler=-Werror>")
    endif()
  endif()
endfunction()
