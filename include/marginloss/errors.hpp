// marginloss: the exception every entry point throws on bad input, and the checks that raise it;
// the exception a communicator throws when its communication library fails.
#pragma once

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

#include "config.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// Thrown for every invalid input: shapes, labels, non-finite or zero-norm rows, hyper-parameters.
/// The message always names the offending argument and its value. Derived from
/// std::invalid_argument so callers that catch the standard type still see it.
class invalid_argument : public std::invalid_argument {
 public:
  /// `what()` is "marginloss: " followed by `what`, so messages say where they come from.
  explicit invalid_argument(const std::string& what) : std::invalid_argument("marginloss: " + what) {}
};

/// Thrown by a communicator of the class-sharded loss when its communication library reports a
/// failure: MPI (distributed/mpi.hpp) or NCCL (cuda/nccl.cuh) returned an error code. The
/// message names the call and the library's own description. Unlike an invalid_argument, this
/// error is not agreed on across the ranks (the channel that would carry the agreement is what
/// failed): the other ranks may be waiting in the collective, so abort the job or the
/// communicator (MPI_Abort, ncclCommAbort) rather than retrying the step.
class communication_error : public std::runtime_error {
 public:
  /// `what()` is "marginloss: " followed by `what`.
  explicit communication_error(const std::string& what) : std::runtime_error("marginloss: " + what) {}
};

namespace detail {

// Builds a message from streamable parts: fail("labels[", i, "] = ", v, " is out of range").
template <typename... Parts>
[[noreturn]] inline void fail(const Parts&... parts) {
  std::ostringstream os;
  os.precision(9);
  (os << ... << parts);
  throw invalid_argument(os.str());
}

template <typename T>
inline void require_finite(const char* policy, const char* name, T value) {
  if (!std::isfinite(value)) fail(policy, ": ", name, " = ", value, " must be finite");
}

template <typename T>
inline void require_positive(const char* policy, const char* name, T value) {
  require_finite(policy, name, value);
  if (!(value > T(0))) fail(policy, ": ", name, " = ", value, " must be > 0");
}

template <typename T>
inline void require_non_negative(const char* policy, const char* name, T value) {
  require_finite(policy, name, value);
  if (!(value >= T(0))) fail(policy, ": ", name, " = ", value, " must be >= 0");
}

}  // namespace detail

MARGINLOSS_NAMESPACE_END
