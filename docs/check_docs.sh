#!/bin/sh
# Checks that the API reference is complete: every public function, type and member of
# include/marginloss (detail/ excluded) carries a doc comment, and Doxygen reports nothing else.
#
#   docs/check_docs.sh [build-dir]
#
# Configures a throwaway build that provides only the `docs` target, with MARGINLOSS_DOCS_WERROR=ON
# (Doxygen extracts only documented entities, warns about each undocumented one and fails on any
# warning; cmake/MarginlossDocs.cmake), builds it, and fails when Doxygen's warnings log
# (<build-dir>/docs/doxygen-warnings.txt) is not empty. Nothing is compiled. Without build-dir a
# temporary directory is used and removed afterwards.
#
# Exit status: 0 complete; 1 warnings (printed) or a failed configure/build; 77 CMake or Doxygen
# not found (skipped: the CTest convention for SKIP_RETURN_CODE).
set -u

root=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v cmake >/dev/null 2>&1; then
  echo "check_docs: cmake not found: skipped" >&2
  exit 77
fi
if ! command -v doxygen >/dev/null 2>&1; then
  echo "check_docs: doxygen not found (Debian: apt-get install doxygen): skipped" >&2
  exit 77
fi

if [ $# -ge 1 ]; then
  build=$1
  mkdir -p "$build" || exit 1
else
  build=$(mktemp -d "${TMPDIR:-/tmp}/marginloss-docs.XXXXXX") || exit 1
  trap 'rm -rf "$build"' EXIT
fi
log=$build/docs/doxygen-warnings.txt

if ! cmake -S "$root" -B "$build" \
    -DMARGINLOSS_DOCS=ON -DMARGINLOSS_DOCS_WERROR=ON \
    -DMARGINLOSS_BUILD_TESTS=OFF -DMARGINLOSS_BUILD_EXAMPLES=OFF -DMARGINLOSS_BUILD_BENCHMARKS=OFF \
    -DMARGINLOSS_INSTALL=OFF -DMARGINLOSS_MPI=OFF -DMARGINLOSS_OPENMP=OFF -DMARGINLOSS_CUDA=OFF \
    >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  echo "check_docs: configuring $build failed" >&2
  exit 1
fi
if ! grep -q '^docs:' "$build/Makefile" 2>/dev/null && ! cmake --build "$build" --target help 2>/dev/null | grep -qw docs; then
  echo "check_docs: CMake found no Doxygen, so there is no docs target: skipped" >&2
  exit 77
fi

rm -f "$log"
cmake --build "$build" --target docs >"$build/build.log" 2>&1
status=$?

if [ ! -f "$log" ]; then
  cat "$build/build.log" >&2
  echo "check_docs: Doxygen wrote no warnings log ($log)" >&2
  exit 1
fi
if [ -s "$log" ]; then
  cat "$log" >&2
  echo "check_docs: $(wc -l <"$log") Doxygen warning line(s): the API reference is incomplete" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  cat "$build/build.log" >&2
  echo "check_docs: building the docs target failed" >&2
  exit 1
fi
echo "check_docs: API reference complete (no Doxygen warnings)"
