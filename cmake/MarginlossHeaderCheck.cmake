# marginloss_add_header_check(<target> <extension> <header>...): an OBJECT library with one
# source per header (relative to include/), each including its header twice, so that every
# header compiles on its own and its include guard works. <extension> (cpp or cu) picks the
# compiler. The caller links the targets the headers need.
function(marginloss_add_header_check target extension)
  set(sources)
  foreach(header IN LISTS ARGN)
    string(MAKE_C_IDENTIFIER ${header} name)
    set(source ${CMAKE_CURRENT_BINARY_DIR}/headers/${name}.${extension})
    # configure_file rewrites the source only when it changes (no rebuild on every configure).
    file(WRITE ${source}.in "#include <${header}>\n#include <${header}>\n")
    configure_file(${source}.in ${source} COPYONLY)
    list(APPEND sources ${source})
  endforeach()
  add_library(${target} OBJECT ${sources})
  marginloss_set_warnings(${target})
endfunction()
