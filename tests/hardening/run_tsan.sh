#!/usr/bin/env bash
# Builds the thread-safety tests (test_threads.cpp) with clang and ThreadSanitizer in
# build/tsan and runs them. OpenMP is off in this build: libgomp is not instrumented, so
# TSan would report its internal synchronisation; the concurrency under test is that of
# std::threads calling the library on distinct workspaces. Exits non-zero on a data race or
# a failed check. Needs clang (14 tested): Debian packages clang, libclang-rt-dev.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$root/build/tsan"
cxx="${CXX_TSAN:-$(command -v clang++ || command -v clang++-14)}"

cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
  -DMARGINLOSS_OPENMP=OFF -DMARGINLOSS_ONEDNN=OFF -DMARGINLOSS_WERROR=ON -DMARGINLOSS_BUILD_TESTS=ON \
  -DMARGINLOSS_BUILD_EXAMPLES=OFF -DMARGINLOSS_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" --target marginloss_thread_tests -j 2

TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  "$build/tests/hardening/marginloss_thread_tests"
