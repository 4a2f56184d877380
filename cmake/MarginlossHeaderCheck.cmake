# marginloss_add_header_check(<target> <extension> <header>...): an OBJECT library with one
# source per header (relative to include/), each including its header twice, so that every
# header compiles on its own and its include guard works. <extension> (cpp or cu) picks the
# compiler. The caller links the targets the headers need.
function(marginloss_add_header_check target extension)
  set(sources)
  foreach(header IN LISTS ARGN)
    string(MAKE_C_IDENTIFIER ${header} name)
    set(source ${CMAKE_CURRENT_BINARY_DIR}/headers/${name}.${extension})
    file(CONFIGURE OUTPUT ${source} CONTENT "#include <${header}>\n#include <${header}>\n")
    list(APPEND sources ${source})
  endforeach()
  add_library(${target} OBJECT ${sources})
  marginloss_set_warnings(${target})
endfunction()
