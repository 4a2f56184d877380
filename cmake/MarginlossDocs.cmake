# The `docs` target: the API reference of include/marginloss with Doxygen (docs/Doxyfile.in),
# written to <build>/docs/html (index.html). Not part of `all`; configure does not need
# Doxygen: without it there is no `docs` target and a message says how to get one.
#
#   cmake --build build --target docs
#
# The reference lists every public entity with its signature (EXTRACT_ALL). With
# MARGINLOSS_DOCS_WERROR=ON it extracts only documented entities (/// or /** */ comments), warns
# about each undocumented one and makes every Doxygen warning an error of the docs target. Doxygen's warnings are also written to
# <build>/docs/doxygen-warnings.txt.
#
# Options (declared in the top-level CMakeLists.txt): MARGINLOSS_DOCS, MARGINLOSS_DOCS_WERROR.
find_package(Doxygen QUIET)
if(DOXYGEN_FOUND)
  set(MARGINLOSS_DOXYGEN_OUTPUT_DIR ${CMAKE_CURRENT_BINARY_DIR}/docs)
  if(MARGINLOSS_DOCS_WERROR)
    set(MARGINLOSS_DOXYGEN_WARN_AS_ERROR FAIL_ON_WARNINGS)
    set(MARGINLOSS_DOXYGEN_EXTRACT_ALL NO)
  else()
    set(MARGINLOSS_DOXYGEN_WARN_AS_ERROR NO)
    set(MARGINLOSS_DOXYGEN_EXTRACT_ALL YES)
  endif()
  configure_file(${PROJECT_SOURCE_DIR}/docs/Doxyfile.in ${MARGINLOSS_DOXYGEN_OUTPUT_DIR}/Doxyfile @ONLY)
  add_custom_target(docs
    COMMAND ${DOXYGEN_EXECUTABLE} ${MARGINLOSS_DOXYGEN_OUTPUT_DIR}/Doxyfile
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    COMMENT "marginloss: API reference with Doxygen ${DOXYGEN_VERSION} -> ${MARGINLOSS_DOXYGEN_OUTPUT_DIR}/html/index.html"
    VERBATIM)
else()
  message(STATUS "marginloss: Doxygen not found (Debian: doxygen): no 'docs' target (API reference)")
endif()
