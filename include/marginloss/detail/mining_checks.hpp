// marginloss: hyper-parameter checks shared by the mining policies.
#pragma once

#include "../errors.hpp"
#include "../policies/common.hpp"
#include "math.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

template <typename T>
inline void check_mining_target(const char* name, T s, T m, MarginTarget target, Fallback fallback, bool conditional) {
  require_positive(name, "s", s);
  require_non_negative(name, "m", m);
  if (target == MarginTarget::additive_angular && !(m < T(pi))) fail(name, ": m = ", m, " must be < pi");
  if (target == MarginTarget::additive_cosine && fallback == Fallback::hard_threshold)
    fail(name, ": fallback = hard_threshold applies to the additive angular target only "
               "(the additive cosine target takes none or easy_margin)");
  if (conditional && (target != MarginTarget::additive_cosine || fallback != Fallback::none))
    fail(name, ": conditional_margin applies to the additive cosine target with fallback = none only");
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END
