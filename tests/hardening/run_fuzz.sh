#!/usr/bin/env bash
# Builds the libFuzzer harness (fuzz_entry_points.cpp) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer in build/fuzz (or $MARGINLOSS_FUZZ_BUILD_DIR), and runs it for a
# bounded time on the committed seed corpus (tests/hardening/corpus, read only) plus a working
# corpus in build/fuzz/corpus.
#
#   tests/hardening/run_fuzz.sh [seconds]      # default 60
#
# Exits non-zero on a finding (crash, sanitizer report, non-finite result, wrong exception);
# the input that triggered it is left in build/fuzz/artifacts/ and its decoded form (policy,
# hyper-parameters, shapes, matrices in hex floats) is printed after "FINDING:". Reproduce one
# with: build/fuzz/tests/hardening/fuzz_entry_points build/fuzz/artifacts/crash-...
#
# The harness is one translation unit instantiating every policy and entry point (the sharded
# ones also over in-process ranks on threads): line tables only (enough for sanitizer reports)
# keep its compile time down.
#
# MARGINLOSS_FUZZ_ALLOW_OVERFLOW=1 tolerates non-finite results for inputs whose exact loss or
# gradient does not fit in the scalar type (see fuzz_entry_points.cpp); every other finding
# still fails. Needs clang (14 tested) with libFuzzer: Debian packages clang, libclang-rt-dev.
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${MARGINLOSS_FUZZ_BUILD_DIR:-$root/build/fuzz}"  # override to keep a separate build tree
cxx="${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14)}"

cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only" \
  -DMARGINLOSS_OPENMP=OFF -DMARGINLOSS_ONEDNN=OFF -DMARGINLOSS_WERROR=ON -DMARGINLOSS_BUILD_TESTS=ON \
  -DMARGINLOSS_BUILD_EXAMPLES=OFF -DMARGINLOSS_BUILD_BENCHMARKS=OFF -DMARGINLOSS_BUILD_FUZZER=ON >/dev/null
cmake --build "$build" --target fuzz_entry_points -j 2

mkdir -p "$build/corpus" "$build/artifacts"
exec "$build/tests/hardening/fuzz_entry_points" \
  -max_total_time="$seconds" -max_len=512 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$build/artifacts/" "$build/corpus" "$root/tests/hardening/corpus"
