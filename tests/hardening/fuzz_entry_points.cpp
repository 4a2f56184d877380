// libFuzzer harness for every public CPU entry point and every policy of marginloss.
//
// Policies (all 11 of policies/, and ClassMargins over each base it accepts): NormFace, CosFace
// (incl. the conditional margin), ArcFace, CombinedMargin, SphereFace (either scale mode),
// SVSoftmax, MVSoftmax, CurricularFace (tau fixed, or updated by every forward:
// update_tau_in_forward, see "stateful" below), AMMSoftmax (every MarginTarget / MVVariant /
// Fallback / Gradient, incl. values outside the enumerators), AdaptiveMargin (learnable
// per-class margins, either RegulariserScope and one outside it) and ml::class_margins(base,
// margins) over CosFace, ArcFace, SV-, MV-Softmax, CurricularFace and AMMSoftmax (the policies
// with a real margin member m: NormFace, CombinedMargin and SphereFace cannot take per-class
// margins, a compile-time error). Per-class margins are ml::ClassValues views of C entries or
// of another length, of fuzzed values, of LDAM margins (margins_from_class_counts on fuzzed
// counts, then project_margins), or a null view.
//
// The input bytes choose the policy, the scalar type (float or double), an entry point, the
// shapes (B, D, C up to 16, zero included), the labels (valid, out of range, and of several
// integer types), the hyper-parameters and per-class margins (typical values, edge values and
// raw bit patterns: NaN, +-Inf, negative, denormals, huge and tiny), the enums, Options (class
// blocks: the dense and the chunked engine; memory budget) and every matrix entry (scaled rows
// with norms from 2^-1100 to 2^1100, exact copies of class weights for cosines of exactly +-1,
// raw bit patterns).
//
// Entry points (loss.hpp, gradients.hpp, distributed/shard.hpp, distributed/class_range.hpp,
// margins.hpp, sampling/):
//   0 forward_backward, allocating (Result, with default or fuzzed Options; with dmargins /
//     regulariser for AdaptiveMargin), compared with the workspace form into strided outputs
//   1 forward_backward, workspace form (Gradients{dX, dW} or {dX, dW, dmargins}), with wrongly
//     shaped outputs and bad Options sometimes; the wrong dmargins presence (none for learnable
//     margins, some for any other policy) must throw
//   2 forward (a Forward context: loss(), regulariser(), workspace()) + backward into
//     caller-allocated contiguous outputs through an ml::Gradients built outside the call
//     (CTAD), arbitrary upstream gradient; then a second backward of the context throws
//   3 forward + backward into strided views (with a dmargins view for AdaptiveMargin)
//   4 the split API with mismatched calls: a stale Forward (the same forward, or one of another
//     policy type, ran on its workspace since: the live forward must survive the rejection), the
//     wrong dmargins presence, per-class margins changed in place between forward and backward,
//     dW aliasing W, dX aliasing W, dX overlapping dW, a dmargins of the wrong length, a
//     non-finite upstream gradient -- each must throw marginloss::invalid_argument without
//     writing into W, and the same forward + backward then gives exactly the reference result;
//     a second backward throws. (The old API's "backward given another policy, other
//     parameters or another W" cannot be written with a context, which carries them.)
//   5 forward_backward with an ml::Shard, and forward with a Shard + backward of its context,
//     - with ml::LocalCommunicator (one rank; class_offset / num_classes fuzzed: a shard
//       outside [0, num_classes) must throw; the whole range equals forward_backward; dmargins
//       must be rejected), half
//     - over 2 or 3 in-process ranks (RankGroup: threads, all-reduces in rank order), each
//       owning its ml::even_class_range (whose invalid arguments must throw), sometimes with one
//       rank inconsistent (offset or row count off by one: a gap, an overlap, a shard outside;
//       another num_classes, B or policy), which every rank must reject; no rank may be left
//       waiting in an all-reduce or enter another collective than the others, the ranks'
//       losses and dX must be bit-identical, the loss that of forward_backward() up to
//       rounding, the other half
//     -- not for AdaptiveMargin, whose sharded entry points are a compile-time error
//   6 forward_backward over an ml::ActiveSet (with and without dmargins; Gradients in braces or
//     built outside the call; the wrong dmargins presence must throw), over
//     - explicit active ids (int32 / int64 / uint64 incl. >= 2^63, duplicates, out of range,
//       cast to ml::Index as the ActiveSet holds them; fuzzed local labels; SubsetOptions incl.
//       a regulariser outside the enum, zero_inactive_rows and keep_cosines), compared with
//       forward_backward on the gathered rows, half
//     - the ActiveSet of a PartialFCSampler (num_classes / sample_rate incl. invalid values,
//       sample() both forms, 1-3 steps: sorted distinct ids, every label present,
//       |A| = max(positives, quota)), a quarter
//     - the ActiveSet of a HardPrototypeMiner (every option incl. invalid and huge values;
//       build / step / refresh / active_set both forms / update (from X and W, and from a
//       subset call's kept cosines) / update_from_scores (fuzzed
//       and corrupted sets) / set_threshold / prune_all / queue, 1-3 steps; invariants of the
//       neighbours and queues), a quarter
//   7 target_cosines (allocating and into a caller's vector, compared with a double reference;
//     CurricularFace then updates tau from them and runs forward_backward), and, for half of
//     the inputs, an AdaptiveSampler (N and every option incl. invalid values; draw both forms,
//     update with and without these target cosines, indices int64 / uint64 incl. out of range,
//     lengths that differ, set_weight; weights are 1 until updated, then in [floor, cap], their
//     total finite; a rejected update changes nothing)
//   cosine level (a quarter of the inputs): cosine_forward_backward, allocating, into dcos,
//     and with per-row scales (not for AdaptiveMargin: a compile-time error)
//   stateful: CurricularFace and ClassMargins<CurricularFace> with update_tau_in_forward = true
//     (a third of their inputs) go through the entry point chosen (allocating or workspace
//     forward_backward, forward + backward (the context's policy() carries the updated tau),
//     one-rank or multi-rank sharded, subset, cosine level) passed const and as a temporary
//     (must throw) and as a modifiable lvalue, whose tau must then be exactly that of
//     update_tau(target_cosines(...)) on a copy with the update off, and whose results must
//     equal that copy's.
// Views: inputs and outputs are outer-strided (row stride) maps with NaN guard columns.
// Not reached: inner-strided views and the compile-time errors above (static_assert;
// tests/compile_fail covers them); ml::MPICommunicator (distributed/mpi.hpp: tests/mpi) and the
// CUDA backend (cuda/: tests/cuda), which need MPI or a GPU; sizes beyond memory (a sampler
// of 2^40 samples allocates, as any container would: only sizes it must reject are fuzzed).
//
// The oracle: every call either returns finite results (loss, dX, dW, dmargins, dcos, dscales) or
// throws marginloss::invalid_argument; inputs that must be rejected (wrong shapes, shards outside
// the class range, bad active ids, mismatched backward calls, stale Forward contexts, the wrong
// dmargins presence, invalid settings) must throw. Anything else - another exception, a non-finite
// value, a sanitizer report, a write outside the output views (checked with NaN guard columns
// around strided outputs), a read outside the input views (guard columns of NaN around strided
// inputs would make the result non-finite), two forms of the same computation that differ, a
// sampler result that breaks its documented invariants, a hang in a sharded call - is a finding and
// aborts.
//
// Build and run: tests/hardening/run_fuzz.sh [seconds].
#include <marginloss/marginloss.hpp>
#include <marginloss/sampling/adaptive_sampler.hpp>
#include <marginloss/sampling/hard_prototype_miner.hpp>
#include <marginloss/sampling/partial_fc.hpp>
#include <marginloss/sampling/subset.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ml = marginloss;
using ml::Index;

namespace {

template <typename T>
using Mat = ml::RowMatrix<T>;
template <typename T>
using StridedMap = Eigen::Map<Mat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// An enumerator of E or, for one input value in count + 1, the first value past the enumeration
// (its range from the library's own enum_info, so a new enumerator needs no change here).
template <typename E>
E enum_or_invalid(std::uint8_t k) {
  return static_cast<E>(k % (ml::detail::enum_info<E>::count + 1));
}

// What the current input decoded to, printed with a finding so that it can be reproduced
// without the fuzzer.
std::string g_desc;
std::function<void()> g_dump;

template <typename... A>
void note(const char* fmt, A... args) {
  char buf[160];
  std::snprintf(buf, sizeof buf, fmt, args...);
  g_desc += buf;
}

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "FINDING: %s\n  input: %s\n", what, g_desc.c_str());
  if (g_dump) g_dump();
  std::fflush(stderr);
  std::abort();
}

template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using type = std::uint32_t;
};
template <>
struct Bits<double> {
  using type = std::uint64_t;
};

template <typename T>
T from_bits(typename Bits<T>::type b) {
  T v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// Edge values, written in double and converted to T (so DBL_MAX becomes +inf in float).
template <typename T>
T special(unsigned k) {
  constexpr double pi = 3.14159265358979323846;
  const double table[] = {0.0,
                          -0.0,
                          1.0,
                          -1.0,
                          0.5,
                          0.35,
                          pi,
                          std::nextafter(static_cast<double>(static_cast<T>(pi)), 0.0),
                          static_cast<double>(std::nextafter(static_cast<T>(pi), T(0))),
                          pi / 2,
                          64.0,
                          128.0,
                          1e4,
                          1e10,
                          1e20,
                          1e30,
                          1e38,
                          static_cast<double>(std::numeric_limits<float>::max()),
                          1e300,
                          std::numeric_limits<double>::max(),
                          static_cast<double>(std::numeric_limits<T>::denorm_min()),
                          static_cast<double>(std::numeric_limits<T>::min()),
                          1e-7,
                          1e-20,
                          1e-30,
                          1e-300,
                          std::numeric_limits<double>::infinity(),
                          -std::numeric_limits<double>::infinity(),
                          std::numeric_limits<double>::quiet_NaN(),
                          -1e30,
                          1.0 + 1e-7,
                          1.0 - 1e-7,
                          1.001,
                          1.0011,
                          -1.001,
                          -1.0011,
                          static_cast<double>(std::nextafter(T(1), T(2))),
                          static_cast<double>(std::nextafter(T(1), T(0))),
                          static_cast<double>(std::nextafter(T(-1), T(0))),
                          5.0,
                          1000.0,
                          0x1p-100,
                          0x1p100,
                          0x1p-1000,
                          0x1p1000};
  constexpr unsigned n = sizeof table / sizeof table[0];
  return static_cast<T>(table[k % n]);
}

// A hyper-parameter: mostly near its typical value, sometimes an edge value or raw bits.
template <typename T>
T hyper_value(FuzzedDataProvider& in, double typical) {
  const auto tag = in.ConsumeIntegral<std::uint8_t>();
  if (tag < 128) return static_cast<T>(typical * (static_cast<double>(tag) / 64.0));
  if (tag < 232) return special<T>(tag - 128u);
  return from_bits<T>(in.ConsumeIntegral<typename Bits<T>::type>());
}

template <typename T>
T hyper(FuzzedDataProvider& in, double typical, const char* name) {
  const T v = hyper_value<T>(in, typical);
  note(" %s=%a", name, static_cast<double>(v));
  return v;
}

// Row scales: norms from far below to far above the accepted ranges.
double row_scale(std::uint8_t k) {
  const double table[] = {1.0,    1.0,    1.0,     1.0,     0.5,     3.0,      1e-20,    1e20,
                          1e-10,  1e10,   1e-30,   1e30,    0x1p-99, 0x1p99,   0x1p-101, 0x1p101,
                          1e-38,  1e38,   1e-45,   1e-300,  1e300,   0x1p-999, 0x1p999,  0x1p-1001,
                          0x1p1001, 1e-320, 1e308, 0.0};
  return table[k % (sizeof table / sizeof table[0])];
}

// One matrix entry at the given row scale.
template <typename T>
T entry(FuzzedDataProvider& in, double scale) {
  const auto k = in.ConsumeIntegral<std::uint8_t>();
  if (k < 224) return static_cast<T>((static_cast<double>(k) - 112.0) / 32.0 * scale);
  if (k < 248) return special<T>(k - 224u);
  return from_bits<T>(in.ConsumeIntegral<typename Bits<T>::type>());
}

template <typename T, typename M>
void fill_rows(FuzzedDataProvider& in, M& m) {
  for (Index i = 0; i < m.rows(); ++i) {
    const double scale = row_scale(in.ConsumeIntegral<std::uint8_t>());
    for (Index k = 0; k < m.cols(); ++k) m(i, k) = entry<T>(in, scale);
  }
}

template <typename T>
bool all_finite(const T& m) {
  for (Index i = 0; i < m.rows(); ++i)
    for (Index k = 0; k < m.cols(); ++k)
      if (!std::isfinite(m(i, k))) return false;
  return true;
}

// Inputs whose exact results cannot be represented in T (a loss or gradient beyond its
// largest finite value): the contract says such inputs must throw, since the exact answer
// does not exist in T. They are still findings unless MARGINLOSS_FUZZ_ALLOW_OVERFLOW=1, which
// tolerates non-finite results only for them (and says so at start-up); any other non-finite
// result is always a finding.
bool g_overflow_expected = false;
bool g_allow_overflow = false;
[[noreturn]] void non_finite(const char* what) {
  std::fprintf(stderr, "non-finite %s\n", what);
  if (g_overflow_expected)
    finding("non-finite result for inputs whose exact loss or gradient overflows T (neither finite nor rejected)");
  finding("non-finite result for inputs whose exact loss and gradients are representable");
}

// Returns false when the run should stop quietly (tolerated overflow).
template <typename T>
bool check_loss(T loss, const char* what) {
  if (std::isfinite(loss)) return true;
  if (g_overflow_expected && g_allow_overflow) return false;
  non_finite(what);
}

template <typename M>
bool check_matrix(const M& m, const char* what) {
  if (all_finite(m)) return true;
  if (g_overflow_expected && g_allow_overflow) return false;
  non_finite(what);
}

// Bounds on a policy's logits and slopes, for the overflow envelope:
//   F           max |f(t)|, |h(c)| and |c| over t, c in [-1, 1] (every fallback)
//   slope       max |f'(t)|, |h'(c)| sin(theta)-weighted, i.e. what reaches dX and dW
//   slope_raw   max |f'(t)|, |h'(c)| as the library returns them in dcos (sin(theta) floored)
//   loss_extra  bound on a regulariser added to the loss (AdaptiveMargin: lambda_m max |m|)
//   grad_extra  bound on the regulariser's gradient (lambda_m) and dL/dm per unit S
struct Envelope {
  double F = 1, slope = 1, slope_raw = 1, loss_extra = 0, grad_extra = 0;
};
template <typename T>
double sine_floor() {
  return sizeof(T) == 4 ? 1e-6 : 1e-12;
}
template <typename T>
double angular_raw() {
  return 1 + 1 / sine_floor<T>();
}
template <typename T>
Envelope envelope_of(const ml::NormFace<T>&) {
  return {};
}
template <typename T>
Envelope envelope_of(const ml::CosFace<T>& p) {
  return {1 + std::fabs(double(p.m)), 1, 1};
}
template <typename T>
Envelope envelope_of(const ml::ArcFace<T>& p) {
  return {2 + std::fabs(double(p.m)), 1, angular_raw<T>()};
}
template <typename T>
Envelope envelope_of(const ml::CombinedMargin<T>& p) {
  const double m1 = std::fabs(double(p.m1));
  return {2 + std::fabs(double(p.m2)) + std::fabs(double(p.m3)), std::max(1.0, m1), 1 + m1 / sine_floor<T>()};
}
template <typename T>
Envelope envelope_of(const ml::SphereFace<T>& p) {
  const double m = std::min(std::max(p.m, 1), 5);
  return {2 * m, m * m, m * m};
}
// Mining policies: the target is CosFace's or ArcFace's; hard non-targets h(c) as documented.
template <typename T>
Envelope envelope_of(const ml::SVSoftmax<T>& p) {
  const double m = std::fabs(double(p.m)), t = std::fabs(double(p.t));
  return {std::max(2 + m, 2 * t + 1), 1 + t, std::max(1 + t, angular_raw<T>())};
}
template <typename T>
Envelope envelope_of(const ml::MVSoftmax<T>& p) {
  const double m = std::fabs(double(p.m)), t = std::fabs(double(p.t));
  return {std::max(2 + m, 2 * t + 1), 1 + t, std::max(1 + t, angular_raw<T>())};
}
template <typename T>
Envelope envelope_of(const ml::CurricularFace<T>& p) {
  const double m = std::fabs(double(p.m)), tau = std::fabs(double(p.tau));
  return {std::max(2 + m, tau + 1), tau + 3, std::max(tau + 3, angular_raw<T>())};
}
template <typename T>
Envelope envelope_of(const ml::AMMSoftmax<T>& p) {
  return {2 + std::fabs(double(p.m)), 2, 1 + angular_raw<T>()};
}
template <typename T>
double max_abs(const ml::ClassValues<T>& v) {
  double m = 0;
  if (!v.data) return m;  // a null view (rejected)
  for (Index k = 0; k < v.size; ++k) m = std::max(m, std::fabs(static_cast<double>(v[k])));  // NaN: skipped
  return m;
}
template <typename T>
Envelope envelope_of(const ml::AdaptiveMargin<T>& p) {
  const double m = max_abs(p.margins), lambda = std::fabs(double(p.lambda_m));
  return {1 + m, 1, 1, lambda * m, lambda + 1};
}
// Fixed per-class margins: the base policy at the largest margin.
template <typename Base>
Envelope envelope_of(const ml::ClassMargins<Base>& p) {
  Base b = p.base;
  b.m = static_cast<typename Base::value_type>(max_abs(p.margins));
  return envelope_of(b);
}

template <typename P>
constexpr bool learnable_v = ml::detail::has_learnable_margins<P>::value;

template <typename P>
struct is_class_margins : std::false_type {};
template <typename B>
struct is_class_margins<ml::ClassMargins<B>> : std::true_type {};

template <typename P>
struct is_adaptive : std::false_type {};
template <typename T>
struct is_adaptive<ml::AdaptiveMargin<T>> : std::true_type {};

// The per-class margins the policies view (ml::ClassValues): the harness owns them, each vector
// alive until the next input (a deque keeps its elements in place as it grows).
template <typename T>
std::deque<ml::Vector<T>>& margin_store() {
  static std::deque<ml::Vector<T>> store;
  return store;
}
template <typename T>
ml::ClassValues<T> keep_margins(ml::Vector<T> m) {
  auto& store = margin_store<T>();
  store.push_back(std::move(m));
  return store.back();
}
// The viewed margins as an Eigen vector (read only).
template <typename T>
Eigen::Map<const ml::Vector<T>> margins_vector(const ml::ClassValues<T>& v) {
  return Eigen::Map<const ml::Vector<T>>(v.data, v.size);
}

// Whether the policy must reject margin value v, from the documented rules (not the policy's
// own predicate): AdaptiveMargin takes any finite margin; ClassMargins<Base> what Base's
// validate() accepts as its m.
template <typename P>
bool margin_rejected(const P& p, typename P::value_type v) {
  if constexpr (is_adaptive<P>::value) {
    (void)p;
    return !std::isfinite(v);
  } else {
    auto b = p.base;
    b.m = v;
    try {
      b.validate();
    } catch (const ml::invalid_argument&) {
      return true;
    }
    return false;
  }
}
// True when a per-class-margins policy must be rejected for C classes: a margins view of
// another length, or an unacceptable value (a base policy that is itself invalid throws anyway).
template <typename P>
bool margins_must_throw(const P& p, Index C) {
  if constexpr (is_class_margins<P>::value || is_adaptive<P>::value) {
    if (p.margins.size != C || !p.margins.data) return true;
    for (Index k = 0; k < C; ++k)
      if (margin_rejected(p, p.margins[k])) return true;
    return false;
  } else {
    (void)p, (void)C;
    return false;
  }
}

// ||row|| in double, rescaled so that it neither over- nor underflows.
template <typename M>
double norm_of_row(const M& m, Index i) {
  double big = 0;
  for (Index k = 0; k < m.cols(); ++k) big = std::max(big, std::fabs(static_cast<double>(m(i, k))));
  if (!(big > 0) || !std::isfinite(big)) return big;
  double sum = 0;
  for (Index k = 0; k < m.cols(); ++k) {
    const double v = static_cast<double>(m(i, k)) / big;
    sum += v * v;
  }
  return big * std::sqrt(sum);
}

// True when the exact loss or gradients may exceed T's range (a conservative upper bound).
template <typename T>
bool beyond_range(double logit, double grad) {
  const double lim = static_cast<double>(std::numeric_limits<T>::max()) / 64;
  return !(4 * logit <= lim && grad <= lim);
}

// Equal values entry by entry (a strided output may take another Eigen kernel than a
// contiguous one, which can turn a +0 into -0; any other difference is a finding).
template <typename A, typename B>
bool same_values(const A& a, const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index k = 0; k < a.cols(); ++k)
      if (!(a(i, k) == b(i, k))) return false;
  return true;
}

// A strided view of rows x cols inside a buffer whose extra columns hold NaN guards.
template <typename T>
struct Guarded {
  Index rows, cols, stride;
  std::vector<T> buf;
  Guarded(Index r, Index c, Index pad) : rows(r), cols(c), stride(c + pad) {
    buf.assign(static_cast<std::size_t>(std::max<Index>(1, r * stride)), std::numeric_limits<T>::quiet_NaN());
  }
  StridedMap<T> view() { return StridedMap<T>(buf.data(), rows, cols, Eigen::OuterStride<>(stride)); }
  // True when every guard entry is still the NaN it was filled with.
  bool guards_intact() const {
    for (Index i = 0; i < rows; ++i)
      for (Index k = cols; k < stride; ++k)
        if (!std::isnan(buf[static_cast<std::size_t>(i * stride + k)])) return false;
    return true;
  }
};

// A vector of n entries between two NaN guards.
template <typename T>
struct GuardedVec {
  Index n;
  std::vector<T> buf;
  explicit GuardedVec(Index size) : n(size), buf(static_cast<std::size_t>(size + 2), std::numeric_limits<T>::quiet_NaN()) {}
  Eigen::Map<ml::Vector<T>> view() { return Eigen::Map<ml::Vector<T>>(buf.data() + 1, n); }
  bool guards_intact() const { return std::isnan(buf.front()) && std::isnan(buf.back()); }
};

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename M>
void dump_matrix(const char* name, const M& m) {
  std::fprintf(stderr, "  %s (%ldx%ld, hex floats):\n", name, static_cast<long>(m.rows()), static_cast<long>(m.cols()));
  for (Index i = 0; i < m.rows(); ++i) {
    std::fprintf(stderr, "   ");
    for (Index k = 0; k < m.cols(); ++k) std::fprintf(stderr, " %a", static_cast<double>(m(i, k)));
    std::fprintf(stderr, "\n");
  }
}

template <typename L>
void dump_labels(const L& labels) {
  std::fprintf(stderr, "  labels:");
  for (Index i = 0; i < labels.size(); ++i) std::fprintf(stderr, " %lld", static_cast<long long>(labels(i)));
  std::fprintf(stderr, "\n");
}

// The per-class margins of a policy, for the dump.
template <typename P>
std::function<void()> dump_margins_of(const P& p) {
  if constexpr (is_class_margins<P>::value || is_adaptive<P>::value)
    return [m = p.margins] {
      if (m.data) dump_matrix("margins", margins_vector(m));
    };
  else {
    (void)p;
    return nullptr;
  }
}
std::function<void()> g_dump_margins;

enum class LabelKind { int32, int64, uint64 };

template <typename L>
L label_value(std::uint8_t k, Index C) {
  if (k < 200) return static_cast<L>(static_cast<Index>(k) % C);
  switch (k % 8) {
    case 0: return static_cast<L>(-1);
    case 1: return static_cast<L>(C);
    case 2: return static_cast<L>(C + 1);
    case 3: return std::numeric_limits<L>::min();
    case 4: return std::numeric_limits<L>::max();
    case 5: return static_cast<L>(static_cast<std::uint64_t>(1) << 63);  // negative as a signed 64-bit index
    case 6: return static_cast<L>(~static_cast<std::uint64_t>(0));       // -1 as a signed 64-bit index
    default: return static_cast<L>(static_cast<std::uint64_t>(1) << 32);
  }
}

template <typename L>
Eigen::Matrix<L, Eigen::Dynamic, 1> make_labels(const std::vector<std::uint8_t>& raw, Index B, Index C) {
  Eigen::Matrix<L, Eigen::Dynamic, 1> y(B);
  for (Index i = 0; i < B; ++i) y(i) = label_value<L>(raw[static_cast<std::size_t>(i)], std::max<Index>(C, 1));
  return y;
}

// Runs `body` and accepts only a normal return or marginloss::invalid_argument; returns true
// when it returned normally.
template <typename F>
bool guarded_call(F&& body) {
  try {
    body();
    return true;
  } catch (const ml::invalid_argument& e) {
    if (std::strncmp(e.what(), "marginloss:", 11) != 0) finding("invalid_argument message does not start with 'marginloss:'");
  }
  // Any other exception escapes and terminates: libFuzzer reports it.
  return false;
}

// ------------------------------------------------------------------------------------------
// In-process ranks for the sharded entry points: one thread per rank, all-reduces through a
// shared buffer, summed (or maxed) in rank order in double as tests/test_chunked_sharded.cpp's
// ThreadGroup does, so every rank gets the same bits. Unlike MPI it reports what would hang
// or corrupt there: a rank that leaves the call (returns or throws) while another waits in an
// all-reduce, and ranks that enter different collectives (operation, length or scalar type).

struct RankLeft {};            // thrown into a waiting rank once another rank has left the call
struct CollectiveMismatch {};  // thrown into every rank of an all-reduce whose calls differ

class RankGroup {
 public:
  explicit RankGroup(int size)
      : size_(size), slots_(static_cast<std::size_t>(size)), calls_(static_cast<std::size_t>(size)) {}

  class Comm {
   public:
    Comm(RankGroup& g, int rank) : g_(g), rank_(rank) {}
    int rank() const { return rank_; }
    int size() const { return g_.size_; }
    template <typename T>
    void allreduce_max(T* data, Index n) {
      g_.reduce(rank_, data, n, true);
    }
    template <typename T>
    void allreduce_sum(T* data, Index n) {
      g_.reduce(rank_, data, n, false);
    }

   private:
    RankGroup& g_;
    int rank_;
  };

  struct Outcome {
    bool returned = false, rejected = false, left_waiting = false, mismatch = false;
    std::string message;  // the invalid_argument's
  };

  // Runs body(rank, comm) on one thread per rank and returns once every rank has left.
  template <typename F>
  std::vector<Outcome> run(F&& body) {
    std::vector<Outcome> out(static_cast<std::size_t>(size_));
    std::vector<std::thread> threads;
    for (int r = 0; r < size_; ++r)
      threads.emplace_back([&, r] {
        Comm comm(*this, r);
        Outcome& o = out[static_cast<std::size_t>(r)];
        try {
          body(r, comm);
          o.returned = true;
        } catch (const ml::invalid_argument& e) {
          o.rejected = true;
          o.message = e.what();
        } catch (const RankLeft&) {
          o.left_waiting = true;
        } catch (const CollectiveMismatch&) {
          o.mismatch = true;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "rank %d threw %s\n", r, e.what());
          finding("a sharded call threw an exception other than marginloss::invalid_argument");
        }
        leave();
      });
    for (auto& t : threads) t.join();
    return out;
  }

 private:
  struct Call {
    bool max;
    Index n;
    std::size_t bytes;
    bool operator!=(const Call& o) const { return max != o.max || n != o.n || bytes != o.bytes; }
  };
  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++left_;
    cv_.notify_all();
  }
  // A barrier that throws RankLeft instead of waiting for a rank that has left.
  void arrive() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (left_ > 0) throw RankLeft{};
    const long generation = generation_;
    if (++waiting_ == size_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation || left_ > 0; });
    if (generation_ == generation) throw RankLeft{};
  }
  template <typename T>
  void reduce(int rank, T* data, Index n, bool max) {
    static_assert(std::is_floating_point_v<T>, "the communicator concept reduces float and double only");
    if (n < 0) finding("an all-reduce of a negative length");
    slots_[static_cast<std::size_t>(rank)].assign(data, data + n);
    calls_[static_cast<std::size_t>(rank)] = Call{max, n, sizeof(T)};
    arrive();
    for (int r = 1; r < size_; ++r)
      if (calls_[static_cast<std::size_t>(r)] != calls_[0]) throw CollectiveMismatch{};
    for (Index k = 0; k < n; ++k) {
      double acc = slots_[0][static_cast<std::size_t>(k)];
      for (int r = 1; r < size_; ++r) {
        const double v = slots_[static_cast<std::size_t>(r)][static_cast<std::size_t>(k)];
        acc = max ? std::max(acc, v) : acc + v;
      }
      data[k] = static_cast<T>(acc);
    }
    arrive();
  }

  int size_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int waiting_ = 0, left_ = 0;
  long generation_ = 0;
  std::vector<std::vector<double>> slots_;
  std::vector<Call> calls_;
};

// ------------------------------------------------------------------------------------------
// Policies whose forward updates their state (CurricularFace's tau, also under ClassMargins):
// with update_tau_in_forward = true they must be passed as a modifiable lvalue.

template <typename P>
constexpr bool stateful_v = ml::detail::has_state_hook<P>::value;

template <typename P>
auto& curricular_of(P& p) {
  if constexpr (is_class_margins<std::remove_const_t<P>>::value)
    return p.base;
  else
    return p;
}
template <typename P>
bool updates_tau(const P& p) {
  if constexpr (stateful_v<P>)
    return p.updates_in_forward();
  else {
    (void)p;
    return false;
  }
}
template <typename P>
P with_tau_update(P p, bool on) {
  if constexpr (stateful_v<P>) curricular_of(p).update_tau_in_forward = on;
  (void)on;
  return p;
}
template <typename P>
bool same_state(const P& a, const P& b) {
  if constexpr (stateful_v<P>) {
    const auto ta = curricular_of(a).tau, tb = curricular_of(b).tau;
    return std::memcmp(&ta, &tb, sizeof ta) == 0;
  } else {
    (void)a, (void)b;
    return true;
  }
}

// Options of the engine: mostly the default, sometimes forced class blocks (the blocked
// path), a negative block (must throw) or a tiny memory budget.
ml::Options options_of(std::uint8_t k) {
  ml::Options o;
  if (k >= 160) o.class_block = static_cast<Index>(k % 5) - 1;  // -1 .. 3
  if (k >= 240) o.memory_budget = k % 2;
  note(" class_block=%ld budget=%lu", static_cast<long>(o.class_block), static_cast<unsigned long>(o.memory_budget));
  return o;
}

// forward_backward / backward into views, with dmargins for policies with learnable margins.
template <typename P, typename MX, typename MW, typename L, typename OX, typename OW, typename OM>
typename P::value_type fb_into(const P& p, const MX& X, const MW& W, const L& y, OX&& dX, OW&& dW, OM&& dm,
                               ml::Workspace<typename P::value_type>& ws, const ml::Options& o) {
  if constexpr (learnable_v<P>)
    return ml::forward_backward(p, X, W, y, {dX, dW, dm}, ws, o);
  else {
    (void)dm;
    return ml::forward_backward(p, X, W, y, {dX, dW}, ws, o);
  }
}
template <typename P, typename Comm, typename OX, typename OW, typename OM>
void bwd_into(const ml::Forward<P, Comm>& fwd, typename P::value_type g, OX&& dX, OW&& dW, OM&& dm) {
  if constexpr (learnable_v<P>)
    ml::backward(fwd, g, {dX, dW, dm});
  else {
    (void)dm;
    ml::backward(fwd, g, {dX, dW});
  }
}
// The same with the wrong dmargins presence (none for learnable margins, dm -- non-empty --
// for any other policy): must throw.
template <typename P, typename Comm, typename OX, typename OW, typename OM>
void bwd_wrong_presence(const ml::Forward<P, Comm>& fwd, typename P::value_type g, OX&& dX, OW&& dW, OM&& dm) {
  if constexpr (learnable_v<P>) {
    (void)dm;
    ml::backward(fwd, g, {dX, dW});
  } else {
    ml::backward(fwd, g, {dX, dW, dm});
  }
}

// ------------------------------------------------------------------------------------------
// Another policy type (the forward that makes a context stale), and the same type with other
// parameters (a rank inconsistent with the others; changes what every fingerprint probes: the
// scale doubled, or a margin moved by >= 0.5).

template <typename P>
auto other_type(const P&) {
  using T = typename P::value_type;
  if constexpr (is_class_margins<P>::value)
    return decltype(std::declval<P>().base){};  // same name, another type
  else if constexpr (std::is_same_v<P, ml::NormFace<T>>)
    return ml::CosFace<T>{};
  else
    return ml::NormFace<T>{};
}

// A margin that changes the margined target at some probe whatever the policy: in [0, 1) it
// moves by 0.5; otherwise (>= 1, or negative, which AdaptiveMargin accepts: -1e30 + 0.5 would
// round back to -1e30) it becomes 0.25, which also applies where a margin >= 1 never does
// (CosFace's conditional margin: t - m only where t > m).
template <typename T>
T other_margin(T m) {
  return m >= T(0) && m < T(1) ? m + T(0.5) : T(0.25);
}
template <typename P>
void mutate(P& q, unsigned v) {
  using T = typename P::value_type;
  if constexpr (std::is_same_v<P, ml::SphereFace<T>>) {
    if (q.scale_mode == ml::Scale::fixed)
      q.s *= T(2);
    else
      q.scale_mode = ml::Scale::fixed;
  } else if constexpr (is_class_margins<P>::value || is_adaptive<P>::value) {
    if (v % 2 == 0 || q.margins.size == 0 || !q.margins.data) {
      if constexpr (is_class_margins<P>::value)
        q.base.s *= T(2);
      else
        q.s *= T(2);
    } else {
      // A copy of the margins: q must not write into the memory the original policy views.
      ml::Vector<T> m = margins_vector(q.margins);
      m(0) = other_margin(m(0));
      q.margins = keep_margins(std::move(m));
    }
  } else if constexpr (std::is_same_v<P, ml::NormFace<T>>) {
    q.s *= T(2);
  } else if constexpr (std::is_same_v<P, ml::CombinedMargin<T>>) {
    if (v % 2 == 0)
      q.s *= T(2);
    else
      q.m3 = other_margin(q.m3);
  } else {
    if (v % 2 == 0)
      q.s *= T(2);
    else
      q.m = other_margin(q.m);
  }
}

template <typename P, typename MX, typename L>
void split_mismatch(const P& policy, FuzzedDataProvider& in, const MX& X, Guarded<typename P::value_type>& Wbuf,
                    Index C, const L& labels, Index pad) {
  using T = typename P::value_type;
  const Index B = X.rows(), D = X.cols();
  auto W = StridedMap<T>(Wbuf.buf.data(), C, D, Eigen::OuterStride<>(Wbuf.stride));
  const Index M = learnable_v<P> ? C : 0;
  ml::Workspace<T> ws;
  T loss1 = T(0);
  Guarded<T> rdX(B, D, pad), rdW(C, D, pad);
  GuardedVec<T> rdm(M);
  try {
    const auto fwd = ml::forward(policy, X, W, labels, ws);
    loss1 = fwd.loss();
    bwd_into(fwd, T(1), rdX.view(), rdW.view(), rdm.view());
  } catch (const ml::invalid_argument&) {
    return;  // rejected, or not representable: nothing to compare with
  }
  if (!check_loss(loss1, "loss (forward)") || !check_matrix(rdX.view(), "dX (backward)") ||
      !check_matrix(rdW.view(), "dW (backward)") || !check_matrix(rdm.view(), "dmargins (backward)"))
    return;
  const std::vector<T> w_before = Wbuf.buf;
  const auto variant = in.ConsumeIntegral<std::uint8_t>();

  // The same forward again: it returned before, so it must return the same loss.
  const auto forward_again = [&] {
    try {
      auto fwd = ml::forward(policy, X, W, labels, ws);
      if (!(fwd.loss() == loss1)) finding("the same forward() returned another loss");
      return fwd;
    } catch (const ml::invalid_argument&) {
      finding("a forward() that returned before threw on the same inputs");
    }
  };
  // `bad_backward` must throw invalid_argument and leave W as it was.
  const auto rejected = [&](const char* what, auto&& bad_backward) {
    bool threw = false;
    try {
      bad_backward();
    } catch (const ml::invalid_argument& e) {
      threw = true;
      if (std::strncmp(e.what(), "marginloss:", 11) != 0) finding("invalid_argument message does not start with 'marginloss:'");
    }
    if (!threw) {
      std::fprintf(stderr, "mismatched backward: %s\n", what);
      finding("backward() accepted a call that does not match its forward() (must throw invalid_argument)");
    }
    if (!same_bits(Wbuf.buf, w_before)) {
      std::fprintf(stderr, "mismatched backward: %s\n", what);
      finding("a rejected backward() wrote into W");
    }
  };
  // A fresh forward, then bad_backward(fwd). The engine's checks consume the forward also when
  // they reject the call (its buffers are about to be overwritten): with `consumes`, the
  // workspace must hold no forward afterwards.
  const auto expect_throw = [&](const char* what, bool consumes, auto&& bad_backward) {
    const auto fwd = forward_again();
    rejected(what, [&] { bad_backward(fwd); });
    if (consumes && ws.holds_forward()) {
      std::fprintf(stderr, "mismatched backward: %s\n", what);
      finding("a rejected backward() left its forward in the workspace (a forward is consumed by one backward)");
    }
  };

  // A stale context: another forward ran on its workspace since -- the same call (a backward of
  // the previous step's forward), or a policy of another type, whose buffers the stale
  // context's backward would misread. The rejection must leave the live forward alone.
  {
    const auto stale = forward_again();
    if (variant & 8) {
      auto other = other_type(policy);  // an lvalue: CurricularFace updates its tau by default
      const bool other_returned = guarded_call([&] { (void)ml::forward(other, X, W, labels, ws); });
      rejected("a stale forward (a forward of another policy type ran since)", [&] {
        Guarded<T> dX(B, D, pad), dW(C, D, pad);
        GuardedVec<T> dm(M);
        bwd_into(stale, T(1), dX.view(), dW.view(), dm.view());
      });
      if (other_returned && !ws.holds_forward())
        finding("a backward of a stale forward consumed the workspace's live forward");
    } else {
      const auto live = forward_again();
      rejected("a stale forward (the same forward ran again since)", [&] {
        Guarded<T> dX(B, D, pad), dW(C, D, pad);
        GuardedVec<T> dm(M);
        bwd_into(stale, T(1), dX.view(), dW.view(), dm.view());
      });
      Guarded<T> dX(B, D, pad), dW(C, D, pad);
      GuardedVec<T> dm(M);
      if (!guarded_call([&] { bwd_into(live, T(1), dX.view(), dW.view(), dm.view()); }))
        finding("after a stale forward's backward was rejected, the live forward's backward threw");
      if (!same_values(dX.view(), rdX.view()) || !same_values(dW.view(), rdW.view()) ||
          !same_values(dm.view(), rdm.view()))
        finding("after a stale forward's backward was rejected, the live forward's backward gives another result");
    }
  }
  // The dmargins presence is checked before the engine: whether the forward is then consumed is
  // left open.
  {
    Guarded<T> dX(B, D, pad), dW(C, D, pad);
    GuardedVec<T> dm(C);
    expect_throw("the wrong dmargins presence", false,
                 [&](const auto& fwd) { bwd_wrong_presence(fwd, T(1), dX.view(), dW.view(), dm.view()); });
    if (!dX.guards_intact() || !dW.guards_intact() || !dm.guards_intact())
      finding("backward wrote outside dX/dW/dmargins");
  }
  // Per-class margins are a view of the caller's memory: changed in place between the forward
  // and its backward (an optimiser step too early), the backward must notice.
  if constexpr (is_class_margins<P>::value || is_adaptive<P>::value)
    expect_throw("per-class margins changed in place after the forward", true, [&](const auto& fwd) {
      // The harness owns the margins (margin_store): writable memory behind the read-only view.
      T* m = const_cast<T*>(policy.margins.data);
      struct Restore {
        T* at;
        T value;
        ~Restore() { *at = value; }
      } restore{m, m[0]};
      m[0] = other_margin(m[0]);
      Guarded<T> dX(B, D, pad), dW(C, D, pad);
      GuardedVec<T> dm(M);
      bwd_into(fwd, T(1), dX.view(), dW.view(), dm.view());
    });
  expect_throw("dW aliasing W", true, [&](const auto& fwd) {
    Guarded<T> dX(B, D, pad);
    GuardedVec<T> dm(M);
    bwd_into(fwd, T(1), dX.view(), W, dm.view());
  });
  expect_throw("dX aliasing W", true, [&](const auto& fwd) {
    StridedMap<T> dX(Wbuf.buf.data(), B, D, Eigen::OuterStride<>(Wbuf.stride));
    Guarded<T> dW(C, D, pad);
    GuardedVec<T> dm(M);
    bwd_into(fwd, T(1), dX, dW.view(), dm.view());
  });
  expect_throw("dX overlapping dW", true, [&](const auto& fwd) {
    Guarded<T> both(std::max(B, C) + 1, D, pad);
    const Index shift = (variant & 2) && B >= 2 ? both.stride : 0;
    StridedMap<T> dX(both.buf.data(), B, D, Eigen::OuterStride<>(both.stride));
    StridedMap<T> dW(both.buf.data() + shift, C, D, Eigen::OuterStride<>(both.stride));
    GuardedVec<T> dm(M);
    bwd_into(fwd, T(1), dX, dW, dm.view());
  });
  expect_throw("a non-finite upstream gradient", true, [&](const auto& fwd) {
    Guarded<T> dX(B, D, pad), dW(C, D, pad);
    GuardedVec<T> dm(M);
    bwd_into(fwd, (variant & 4) ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::quiet_NaN(), dX.view(),
             dW.view(), dm.view());
  });
  if constexpr (learnable_v<P>) {
    // C - 1 entries for C = 1 is no dmargins at all: the presence check, before the engine.
    const Index n = C + 1 - 2 * (variant & 1);
    expect_throw("dmargins of the wrong length", n > 0, [&](const auto& fwd) {
      Guarded<T> dX(B, D, pad), dW(C, D, pad);
      GuardedVec<T> dm(n);
      ml::backward(fwd, T(1), {dX.view(), dW.view(), dm.view()});
    });
  }

  // The same call again: exactly the reference result.
  const auto fwd = forward_again();
  Guarded<T> dX(B, D, pad), dW(C, D, pad);
  GuardedVec<T> dm(M);
  if (!guarded_call([&] { bwd_into(fwd, T(1), dX.view(), dW.view(), dm.view()); }))
    finding("after rejected mismatched calls, the matching forward() + backward() threw");
  if (!same_values(dX.view(), rdX.view()) || !same_values(dW.view(), rdW.view()) || !same_values(dm.view(), rdm.view()))
    finding("after rejected mismatched calls, the matching forward() + backward() gives another result");
  if (!dX.guards_intact() || !dW.guards_intact() || !dm.guards_intact()) finding("backward wrote outside dX/dW/dmargins");
  bool threw = false;
  try {
    Guarded<T> dX2(B, D, pad), dW2(C, D, pad);
    GuardedVec<T> dm2(M);
    bwd_into(fwd, T(1), dX2.view(), dW2.view(), dm2.view());
  } catch (const ml::invalid_argument&) {
    threw = true;
  }
  if (!threw) finding("a second backward() of one forward did not throw");
}

// ------------------------------------------------------------------------------------------
// Sharded entry points with one rank (ml::LocalCommunicator); or over several ranks
// (multi_rank_calls, below), for half of the inputs.

template <typename P>
struct MultiRank {
  bool all_returned = false;
  std::vector<P> policies;  // each rank's, after the call
};

template <typename P, typename MX, typename MW>
MultiRank<P> multi_rank_calls(const P& policy, FuzzedDataProvider& in, const MX& X, const MW& W,
                              const ml::IndexVector& labels, Index pad, typename P::value_type grad_loss);

// The labels as Index (for the multi-rank calls: one instantiation per policy; the label types
// are fuzzed through the one-rank calls). Out-of-range values stay out of range.
template <typename L>
ml::IndexVector index_labels(const L& labels) {
  ml::IndexVector y(labels.size());
  for (Index i = 0; i < labels.size(); ++i) y(i) = static_cast<Index>(labels(i));
  return y;
}

template <typename P, typename MX, typename MW, typename L>
void sharded_calls(const P& policy, FuzzedDataProvider& in, const MX& X, const MW& W, const L& labels, Index pad,
                   typename P::value_type grad_loss) {
  using T = typename P::value_type;
  if (in.ConsumeBool()) {
    multi_rank_calls(policy, in, X, W, index_labels(labels), pad, grad_loss);
    return;
  }
  const Index B = X.rows(), D = X.cols(), C = W.rows();
  const auto k = in.ConsumeIntegral<std::uint8_t>();
  Index offset = 0, nc = C;
  if (k >= 96 && k < 240) {
    offset = static_cast<Index>(k % 7) - 2;
    nc = C + offset + static_cast<Index>((k >> 3) % 5) - 2;
  } else if (k >= 240) {
    constexpr Index big = std::numeric_limits<Index>::max(), small = std::numeric_limits<Index>::min();
    switch (k % 8) {
      case 0: offset = big; nc = big; break;
      case 1: offset = small; break;
      case 2: offset = big - (C > 0 ? C - 1 : 0); nc = big; break;  // one class past the end (C >= 1)
      case 3: offset = big - C; nc = big; break;  // inside: the last classes of the range
      case 4: nc = small; break;
      case 5: nc = -1; break;
      case 6: offset = big; break;
      default: offset = -1; nc = big; break;
    }
  }
  const bool inside = offset >= 0 && nc >= C && offset <= nc - C;
  const auto form = in.ConsumeIntegral<std::uint8_t>();
  const ml::Options o = options_of(in.ConsumeIntegral<std::uint8_t>());
  note(" class_offset=%lld num_classes=%lld form=%s", static_cast<long long>(offset), static_cast<long long>(nc),
       form % 2 ? "forward+backward with a Shard" : "forward_backward with a Shard");
  ml::LocalCommunicator comm;
  ml::Workspace<T> ws;
  Guarded<T> dXg(B, D, pad), dWg(C, D, pad);
  T loss = T(0);
  const bool ok = guarded_call([&] {
    if (form % 2 == 0) {
      loss = ml::forward_backward(policy, X, W, labels, {dXg.view(), dWg.view()}, ws, ml::Shard{offset, nc, comm}, o);
    } else {
      const auto fwd = ml::forward(policy, X, W, labels, ws, ml::Shard{offset, nc, comm}, o);
      loss = fwd.loss();
      ml::backward(fwd, grad_loss, {dXg.view(), dWg.view()});
    }
  });
  if (!dXg.guards_intact() || !dWg.guards_intact()) finding("sharded call wrote outside dX/dW");
  {
    // dmargins for a policy without learnable margins (none has them here): rejected.
    Guarded<T> dX2(B, D, pad), dW2(C, D, pad);
    GuardedVec<T> dm2(std::max<Index>(C, 1));
    ml::Workspace<T> ws2;
    if (guarded_call([&] {
          (void)ml::forward_backward(policy, X, W, labels, {dX2.view(), dW2.view(), dm2.view()}, ws2,
                                     ml::Shard{offset, nc, comm}, o);
        }))
      finding("forward_backward with a Shard accepted dmargins for a policy without learnable margins");
    if (!dX2.guards_intact() || !dW2.guards_intact() || !dm2.guards_intact())
      finding("sharded call wrote outside dX/dW/dmargins");
  }
  if (!ok) return;
  if (!inside) finding("sharded call accepted a shard outside [0, num_classes)");
  if (!check_loss(loss, "loss (sharded)") || !check_matrix(dXg.view(), "dX (sharded)") ||
      !check_matrix(dWg.view(), "dW (sharded)"))
    return;
  if (form % 2 == 0 && offset == 0 && nc == C) {
    ml::Workspace<T> ws2;
    Guarded<T> dX2(B, D, pad), dW2(C, D, pad);
    T loss2 = T(0);
    if (!guarded_call([&] { loss2 = ml::forward_backward(policy, X, W, labels, {dX2.view(), dW2.view()}, ws2, o); }))
      finding("forward_backward threw where the sharded call over all classes returned");
    if (!(loss2 == loss) || !same_values(dX2.view(), dXg.view()) || !same_values(dW2.view(), dWg.view()))
      finding("one-rank sharded call over all classes differs from forward_backward");
  }
}

// ------------------------------------------------------------------------------------------
// Sharded entry points over 2 or 3 in-process ranks (RankGroup). Each rank owns the rows of its
// ml::even_class_range of W, sometimes with one rank made inconsistent (its offset or row count
// moved by one -- a gap, an overlap or a shard outside the classes --, another num_classes,
// another B, another policy), which every rank must reject. The oracle: no rank is left
// waiting in an all-reduce, every rank runs the same collectives, a forward returns on every
// rank or on none, ranks disagree only where a rank's own dW overflows (after its last
// collective, documented), and the loss and dX of the ranks that return are bit-identical,
// finite, and the loss is that of forward_backward() up to rounding. The labels come as Index
// (index_labels). Returns the per-rank policies (their state, for CurricularFace).

template <typename P, typename MX, typename MW>
MultiRank<P> multi_rank_calls(const P& policy, FuzzedDataProvider& in, const MX& X, const MW& W,
                              const ml::IndexVector& labels, Index pad, typename P::value_type grad_loss) {
  using T = typename P::value_type;
  using ConstMap = Eigen::Map<const Mat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
  const Index B = X.rows(), D = X.cols(), C = W.rows();
  const auto k = in.ConsumeIntegral<std::uint8_t>();
  const int n = 2 + k % 2;
  // even_class_range: rejects a negative class count, no ranks, a rank outside them.
  for (const auto& bad : {std::make_tuple(Index(-1), n, 0), std::make_tuple(C, 0, 0), std::make_tuple(C, n, n),
                          std::make_tuple(C, n, -1)})
    if (guarded_call([&] { (void)ml::even_class_range(std::get<0>(bad), std::get<1>(bad), std::get<2>(bad)); }))
      finding("even_class_range accepted invalid arguments");

  struct Rank {
    Index offset, count, num_classes, batch;
    bool other_policy;
  };
  std::vector<Rank> ranks;
  for (int r = 0; r < n; ++r) {
    const ml::ClassRange cr = ml::even_class_range(C, n, r);
    ranks.push_back({cr.offset, cr.count, C, B, false});
  }
  const auto c1 = in.ConsumeIntegral<std::uint8_t>(), c2 = in.ConsumeIntegral<std::uint8_t>();
  const char* how = "even";
  if (c1 >= 160) {
    Rank& bad = ranks[static_cast<std::size_t>(c1 % n)];
    switch ((c1 >> 2) % 6) {
      case 0: bad.offset -= 1, how = "offset - 1"; break;
      case 1: bad.offset += 1, how = "offset + 1"; break;
      case 2: bad.count += 1, how = "one row more"; break;
      case 3: bad.count += bad.count > 0 ? -1 : 1, how = "one row less (or more)"; break;
      case 4: bad.num_classes += 1, how = "num_classes + 1"; break;
      default: bad.num_classes -= 1, how = "num_classes - 1"; break;
    }
  } else if (c2 >= 200 && B > 0) {
    Rank& bad = ranks[static_cast<std::size_t>(c2 % n)];
    if (c2 >= 228) {
      bad.other_policy = true;
      how = "another policy";
    } else {
      bad.batch = B - 1;
      how = "B - 1";
    }
  }
  // Consistent: the same B, num_classes = C and policy everywhere, and shards that tile [0, C)
  // (an empty shard may sit anywhere inside it).
  bool consistent = true;
  Index total = 0;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    const Rank& a = ranks[r];
    consistent = consistent && a.num_classes == C && a.batch == B && !a.other_policy && a.offset >= 0 && a.count >= 0 &&
                 a.offset + a.count <= C;
    total += a.count;
    for (std::size_t q = 0; q < r; ++q) {
      const Rank& b = ranks[q];
      if (a.count > 0 && b.count > 0 && a.offset < b.offset + b.count && b.offset < a.offset + a.count)
        consistent = false;
    }
  }
  consistent = consistent && total == C;
  const auto form = in.ConsumeIntegral<std::uint8_t>();
  const ml::Options o = options_of(in.ConsumeIntegral<std::uint8_t>());
  note(" ranks=%d layout=%s form=%s", n, how,
       form % 2 ? "forward+backward with a Shard" : "forward_backward with a Shard");

  std::vector<Guarded<T>> Ws, dXs, dWs;
  std::vector<ml::IndexVector> lab;
  MultiRank<P> result;
  for (int r = 0; r < n; ++r) {
    const Rank& rk = ranks[static_cast<std::size_t>(r)];
    Ws.emplace_back(rk.count, D, pad);
    auto w = Ws.back().view();
    for (Index j = 0; j < rk.count && C > 0; ++j) w.row(j) = W.row(((rk.offset + j) % C + C) % C);
    dXs.emplace_back(rk.batch, D, pad);
    dWs.emplace_back(rk.count, D, pad);
    lab.push_back(labels.head(rk.batch));
    result.policies.push_back(policy);
    if (rk.other_policy) mutate(result.policies.back(), c2);
  }
  std::vector<T> loss(static_cast<std::size_t>(n), T(0));
  std::vector<char> forward_returned(static_cast<std::size_t>(n), 0);
  RankGroup group(n);
  const auto out = group.run([&](int r, RankGroup::Comm& comm) {
    const auto u = static_cast<std::size_t>(r);
    const Rank& rk = ranks[u];
    const ConstMap Xr(X.data(), rk.batch, D, Eigen::OuterStride<>(X.outerStride()));
    const auto Wr = Ws[u].view();
    P& p = result.policies[u];  // a modifiable lvalue: a stateful policy is updated
    ml::Workspace<T> ws;
    if (form % 2 == 0) {
      loss[u] = ml::forward_backward(p, Xr, Wr, lab[u], {dXs[u].view(), dWs[u].view()}, ws,
                                     ml::Shard{rk.offset, rk.num_classes, comm}, o);
    } else {
      const auto fwd = ml::forward(p, Xr, Wr, lab[u], ws, ml::Shard{rk.offset, rk.num_classes, comm}, o);
      loss[u] = fwd.loss();
      forward_returned[u] = 1;
      ml::backward(fwd, grad_loss, {dXs[u].view(), dWs[u].view()});
    }
  });
  int returned = 0, forwards = 0;
  for (int r = 0; r < n; ++r) {
    const auto u = static_cast<std::size_t>(r);
    if (out[u].left_waiting)
      finding("a rank left a sharded call while another waited in an all-reduce (with MPI the other ranks hang)");
    if (out[u].mismatch)
      finding("the ranks of a sharded call entered different collectives (operation, length or type)");
    if (!dXs[u].guards_intact() || !dWs[u].guards_intact()) finding("sharded call wrote outside dX/dW (multi-rank)");
    returned += out[u].returned ? 1 : 0;
    forwards += forward_returned[u];
  }
  if (form % 2 == 1 && forwards != 0 && forwards != n)
    finding("forward() with a Shard returned on some ranks and threw on others");
  if (returned == 0) return result;
  if (!consistent) finding("a sharded call over inconsistent ranks returned (must throw on every rank)");
  for (int r = 0; r < n; ++r) {
    const auto u = static_cast<std::size_t>(r);
    if (out[u].rejected && out[u].message.find("a gradient is not representable") == std::string::npos) {
      std::fprintf(stderr, "rank %d: %s\n", r, out[u].message.c_str());
      finding("a sharded call threw on some ranks and returned on others (not a rank's own dW overflow)");
    }
  }
  std::size_t first = 0;
  while (!out[first].returned) ++first;
  for (int r = 0; r < n; ++r) {
    const auto u = static_cast<std::size_t>(r);
    if (!out[u].returned) continue;
    if (!check_loss(loss[u], "loss (multi-rank sharded)") || !check_matrix(dXs[u].view(), "dX (multi-rank sharded)") ||
        !check_matrix(dWs[u].view(), "dW (multi-rank sharded)"))
      return result;
    if (!same_bits(std::vector<T>{loss[u]}, std::vector<T>{loss[first]}) ||
        !same_values(dXs[u].view(), dXs[first].view()))
      finding("the ranks of a sharded call returned different losses or dX");
    if (!same_state(result.policies[u], result.policies[first]))
      finding("the ranks of a sharded call updated their policies differently");
  }
  result.all_returned = returned == n;
  // The loss of forward_backward() on all of W, up to rounding (the ranks merge their row
  // maxima and sums in another order).
  P dense = policy;
  T dloss = T(0);
  if (result.all_returned && guarded_call([&] { dloss = ml::forward_backward(dense, X, W, labels, o).loss; })) {
    const Envelope e = envelope_of(policy);
    double S = std::fabs(static_cast<double>(policy.scale(T(1))));
    if (policy.scale_is_feature_norm())
      for (Index i = 0; i < B; ++i)
        S = std::max(S, std::fabs(static_cast<double>(policy.scale(static_cast<T>(norm_of_row(X, i))))));
    const double eps = std::numeric_limits<T>::epsilon();
    const double tol = 256 * eps * (1 + std::fabs(static_cast<double>(dloss)) + S * (e.F + std::log(double(C) + 1)));
    if (!(std::fabs(static_cast<double>(loss[first]) - static_cast<double>(dloss)) <= tol)) {
      std::fprintf(stderr, "multi-rank loss %a, forward_backward %a, tolerance %g\n", static_cast<double>(loss[first]),
                   static_cast<double>(dloss), tol);
      finding("the multi-rank sharded loss differs from forward_backward() beyond rounding");
    }
    if (!same_state(dense, result.policies[first]))
      finding("a sharded call updated the policy's state unlike forward_backward()");
  }
  return result;
}

// ------------------------------------------------------------------------------------------
// Subset entry points.

// The policy forward_backward() runs on the gathered rows, for the comparison.
template <typename P, typename AV>
P gathered_policy(const P& p, const AV& active, ml::SubsetRegulariser reg) {
  P q = p;
  if constexpr (is_class_margins<P>::value || is_adaptive<P>::value) {
    ml::Vector<typename P::value_type> m(active.size());
    for (Index a = 0; a < active.size(); ++a) m(a) = p.margins[static_cast<Index>(active(a))];
    q.margins = keep_margins(std::move(m));
  }
  if constexpr (is_adaptive<P>::value)
    if (reg == ml::SubsetRegulariser::active_classes) q.scope = ml::RegulariserScope::all_classes;
  (void)reg;
  return q;
}

// local_labels: fuzzed, or those of an ActiveSet from a sampler (given_local).
template <typename P, typename MX, typename MW, typename AV>
void subset_with(const P& policy, FuzzedDataProvider& in, const MX& X, const MW& W, const AV& active, bool valid_active,
                 Index pad, const ml::IndexVector* given_local = nullptr) {
  using T = typename P::value_type;
  const Index B = X.rows(), D = X.cols(), C = W.rows(), A = active.size();
  ml::IndexVector local(B);
  bool valid_labels = true;
  if (given_local) {
    local = *given_local;
    valid_labels = local.size() == B;
    for (Index i = 0; i < local.size(); ++i) valid_labels = valid_labels && local(i) >= 0 && local(i) < A;
  } else {
    for (Index i = 0; i < B; ++i) {
      local(i) = label_value<Index>(in.ConsumeIntegral<std::uint8_t>(), std::max<Index>(A, 1));
      valid_labels = valid_labels && local(i) >= 0 && local(i) < A;
    }
  }
  const auto flags = in.ConsumeIntegral<std::uint8_t>();
  ml::SubsetOptions so;
  so.zero_inactive_rows = flags & 1;
  so.regulariser = enum_or_invalid<ml::SubsetRegulariser>(static_cast<std::uint8_t>(flags >> 1));
  so.engine = options_of(in.ConsumeIntegral<std::uint8_t>());
  // flags & 8 chose between the ids + local labels and the ActiveSet overloads; one form is
  // left, so it now chooses an ml::Gradients built outside the call (CTAD) or braces.
  const bool outside = flags & 8;
  const bool wrong_dm = learnable_v<P> && (flags & 16);
  so.keep_cosines = flags & 32;  // may throw when the engine would run in class blocks
  note(" A=%ld zero_inactive=%d regulariser=%d gradients_outside=%d", static_cast<long>(A), int(so.zero_inactive_rows),
       int(so.regulariser), int(outside));
  bool must_throw = !valid_active || !valid_labels || static_cast<int>(so.regulariser) >= ml::detail::enum_info<ml::SubsetRegulariser>::count || so.engine.class_block < 0 ||
                    wrong_dm;
  must_throw = must_throw || margins_must_throw(policy, C);
  struct Restore {
    std::function<void()> saved = g_dump;
    ~Restore() { g_dump = saved; }
  } restore;
  g_dump = [&, prev_dump = restore.saved] {
    if (prev_dump) prev_dump();
    std::fprintf(stderr, "  active:");
    for (Index a = 0; a < A; ++a) std::fprintf(stderr, " %lld", static_cast<long long>(active(a)));
    std::fprintf(stderr, "\n  local ");
    dump_labels(local);
  };

  const T sentinel = T(0.75);
  Guarded<T> dXg(B, D, pad), dWg(C, D, pad);
  for (Index j = 0; j < C; ++j)
    for (Index k = 0; k < D; ++k) dWg.buf[static_cast<std::size_t>(j * dWg.stride + k)] = sentinel;
  GuardedVec<T> dmg(learnable_v<P> ? C + (wrong_dm ? 1 : 0) : 0);
  // The ids as the ActiveSet holds them (ml::Index): uint64 ids >= 2^63 become negative, which
  // keeps them invalid, as valid_active (on the ids' own type) says.
  const ml::ActiveSet set{active.template cast<Index>(), local};
  ml::SubsetWorkspace<T> sws;
  T loss = T(0);
  const bool ok = guarded_call([&] {
    auto dX = dXg.view();
    auto dW = dWg.view();
    if constexpr (learnable_v<P>) {
      auto dm = dmg.view();
      if (outside) {
        ml::Gradients g{dX, dW, dm};
        loss = ml::forward_backward(policy, X, W, set, g, sws, so);
      } else {
        loss = ml::forward_backward(policy, X, W, set, {dX, dW, dm}, sws, so);
      }
    } else {
      if (outside) {
        ml::Gradients g{dX, dW};
        loss = ml::forward_backward(policy, X, W, set, g, sws, so);
      } else {
        loss = ml::forward_backward(policy, X, W, set, {dX, dW}, sws, so);
      }
    }
  });
  if (!dXg.guards_intact() || !dWg.guards_intact() || !dmg.guards_intact())
    finding("subset forward_backward wrote outside dX/dW/dmargins");
  {
    // The wrong dmargins presence (none for learnable margins, C entries for any other policy)
    // is rejected, whatever else is wrong with the call.
    Guarded<T> dX2(B, D, pad), dW2(C, D, pad);
    GuardedVec<T> dm2(std::max<Index>(C, 1));
    ml::SubsetWorkspace<T> sws2;
    if (guarded_call([&] {
          if constexpr (learnable_v<P>)
            (void)ml::forward_backward(policy, X, W, set, {dX2.view(), dW2.view()}, sws2, so);
          else
            (void)ml::forward_backward(policy, X, W, set, {dX2.view(), dW2.view(), dm2.view()}, sws2, so);
        }))
      finding("subset forward_backward accepted Gradients whose dmargins presence does not match the policy");
    if (!dX2.guards_intact() || !dW2.guards_intact() || !dm2.guards_intact())
      finding("subset forward_backward wrote outside dX/dW/dmargins");
  }
  if (!ok) return;
  if (must_throw) finding("subset forward_backward accepted an invalid active set, local labels, options or dmargins");
  if (so.keep_cosines) {
    const auto kept = sws.cosines();
    bool in_range = kept.rows() == B && kept.cols() == A;
    for (Index k = 0; in_range && k < kept.size(); ++k) in_range = std::abs(kept.data()[k]) <= T(1);
    if (!in_range) finding("SubsetOptions::keep_cosines: the kept cosines are not B x |A| values in [-1, 1]");
  } else if (sws.cosines().size() != 0) {
    finding("SubsetWorkspace::cosines() holds cosines of a call without keep_cosines");
  }
  if (!check_loss(loss, "loss (subset)") || !check_matrix(dXg.view(), "dX (subset)") ||
      !check_matrix(dWg.view(), "dW (subset)") || !check_matrix(dmg.view(), "dmargins (subset)"))
    return;

  // The same loss as forward_backward() on the gathered rows.
  ml::RowMatrix<T> Wa(A, D);
  for (Index a = 0; a < A; ++a) Wa.row(a) = W.row(static_cast<Index>(active(a)));
  const P q = gathered_policy(policy, active, so.regulariser);
  ml::Workspace<T> ws;
  ml::RowMatrix<T> rdX(B, D), rdW(A, D);
  ml::Vector<T> rdm(learnable_v<P> ? A : 0);
  T rloss = T(0);
  if (!guarded_call([&] { rloss = fb_into(q, X, Wa, local, rdX, rdW, rdm, ws, so.engine); })) {
    if constexpr (!learnable_v<P>)
      finding("forward_backward on the gathered rows threw where the subset forward_backward returned");
    return;
  }
  bool all_classes_as_policy = false;
  (void)all_classes_as_policy;
  if constexpr (is_adaptive<P>::value)
    all_classes_as_policy =
        so.regulariser == ml::SubsetRegulariser::as_policy && policy.scope == ml::RegulariserScope::all_classes;
  bool same = same_values(dXg.view(), rdX);
  for (Index a = 0; a < A; ++a) same = same && same_values(dWg.view().row(static_cast<Index>(active(a))), rdW.row(a));
  std::vector<unsigned char> is_active(static_cast<std::size_t>(C), 0);
  for (Index a = 0; a < A; ++a) is_active[static_cast<std::size_t>(active(a))] = 1;
  for (Index j = 0; j < C; ++j)
    if (!is_active[static_cast<std::size_t>(j)])
      for (Index k = 0; k < D; ++k)
        if (!(dWg.view()(j, k) == (so.zero_inactive_rows ? T(0) : sentinel)))
          finding("subset forward_backward changed a dW row of an inactive class (or did not zero it)");
  if (!same) finding("subset forward_backward differs from forward_backward on the gathered rows (dX or dW)");
  if constexpr (learnable_v<P>) {
    const auto dm = dmg.view();
    const T inactive = all_classes_as_policy ? -T(1) * policy.lambda_m / static_cast<T>(C) : T(0);
    for (Index j = 0; j < C; ++j)
      if (!is_active[static_cast<std::size_t>(j)] && !(dm(j) == inactive))
        finding("subset forward_backward: dmargins of an inactive class is not the regulariser's gradient");
    if (!all_classes_as_policy)
      for (Index a = 0; a < A; ++a)
        if (!(dm(static_cast<Index>(active(a))) == rdm(a)))
          finding("subset forward_backward: dmargins differs from forward_backward on the gathered rows");
    // The loss: the cross-entropy over the active classes plus the regulariser chosen.
    double expect = static_cast<double>(rloss);
    if (all_classes_as_policy)
      expect = static_cast<double>(rloss) - static_cast<double>(ws.regulariser()) -
               static_cast<double>(policy.lambda_m) * static_cast<double>(margins_vector(policy.margins).mean());
    const double tol = (sizeof(T) == 4 ? 1e-4 : 1e-10) *
                       (std::fabs(static_cast<double>(rloss)) + std::fabs(static_cast<double>(ws.regulariser())) +
                        std::fabs(static_cast<double>(policy.lambda_m)) * max_abs(policy.margins) + 1);
    if (!(std::fabs(static_cast<double>(loss) - expect) <= tol))
      finding("subset forward_backward: the loss differs from forward_backward on the gathered rows");
  } else {
    if (!(loss == rloss))
      finding("subset forward_backward: the loss differs from forward_backward on the gathered rows");
  }
}

// ------------------------------------------------------------------------------------------
// Samplers (sampling/): PartialFCSampler and HardPrototypeMiner produce the ActiveSet that
// forward_backward() over an ActiveSet then trains on; AdaptiveSampler is driven by target_cosines().
// Their oracle: a constructor throws invalid_argument exactly for the documented invalid
// settings; every call returns a result satisfying its documented invariants or throws
// invalid_argument (and a rejected update leaves the state as it was).

// Valid ids: 1 <= A <= C, every id in [0, C) in its own signedness, no repeat.
template <typename AV>
bool valid_active_ids(const AV& active, Index C) {
  using I = typename AV::Scalar;
  const Index A = active.size();
  bool valid = A >= 1 && A <= C;
  std::vector<unsigned char> seen(static_cast<std::size_t>(std::max<Index>(C, 0)), 0);
  for (Index a = 0; a < A && valid; ++a) {
    const I v = active(a);
    const bool in_range = std::is_unsigned_v<I> ? static_cast<std::uint64_t>(v) < static_cast<std::uint64_t>(C)
                                                : (static_cast<long long>(v) >= 0 && static_cast<long long>(v) < C);
    if (!in_range || seen[static_cast<std::size_t>(v)])
      valid = false;
    else
      seen[static_cast<std::size_t>(v)] = 1;
  }
  return valid;
}

// Whether every label is in [0, C) in its own signedness (and there is at least one).
template <typename L>
bool labels_in_range(const L& labels, Index C) {
  bool ok = labels.size() > 0;
  for (Index i = 0; i < labels.size() && ok; ++i) {
    const auto y = labels(i);
    ok = std::is_unsigned_v<typename L::Scalar> ? static_cast<std::uint64_t>(y) < static_cast<std::uint64_t>(C)
                                                : (static_cast<long long>(y) >= 0 && static_cast<long long>(y) < C);
  }
  return ok;
}

// The invariants of a sampler's ActiveSet over n classes: distinct ids in [0, n), every label
// present, local_labels pointing at it; the batch's distinct labels first in order of first
// appearance (first_labels) or the ids sorted (sorted).
template <typename L>
void check_active_set(const ml::ActiveSet& a, const L& labels, Index n, bool sorted, bool first_labels,
                      const char* who) {
  const Index A = a.size(), B = labels.size();
  if (!valid_active_ids(a.classes, n)) finding(who);
  if (a.local_labels.size() != B) finding(who);
  for (Index i = 0; i < B; ++i) {
    const Index l = a.local_labels(i);
    if (!(l >= 0 && l < A) || a.classes(l) != static_cast<Index>(labels(i))) finding(who);
  }
  if (sorted)
    for (Index k = 1; k < A; ++k)
      if (!(a.classes(k - 1) < a.classes(k))) finding(who);
  if (first_labels) {
    Index next = 0;
    std::vector<Index> order;
    for (Index i = 0; i < B; ++i)
      if (std::find(order.begin(), order.end(), static_cast<Index>(labels(i))) == order.end())
        order.push_back(static_cast<Index>(labels(i)));
    for (const Index y : order)
      if (next >= A || a.classes(next++) != y) finding(who);
  }
}

// Counts for sampler settings: small values mostly, sometimes negative or huge.
Index count_value(std::uint8_t k) {
  if (k < 208) return k % 7;
  const Index table[] = {
      -1,  std::numeric_limits<Index>::min(), std::numeric_limits<Index>::max(), Index(1) << 31, (Index(1) << 62) + 1,
      1000};
  return table[k % 6];
}
// Real settings: a small grid mostly, sometimes edge values (NaN, +-Inf, denormal, huge).
double setting_value(std::uint8_t k, double typical) {
  if (k < 128) return typical * static_cast<double>(k) / 64.0;
  if (k < 160) return (static_cast<double>(k) - 144.0) / 8.0;  // -2 .. 1.875
  return special<double>(k - 160u);
}

// The sampler runs return the ActiveSets they produced (with whether each is a valid set of
// ids of the C classes), which subset_calls then trains on: the samplers are instantiated per
// scalar and label type, not per policy.
struct SampledSet {
  ml::ActiveSet set;
  bool valid;
};

template <typename L>
std::vector<SampledSet> partial_fc_sets(FuzzedDataProvider& in, Index C, const L& labels) {
  std::vector<SampledSet> sets;
  const double r = setting_value(in.ConsumeIntegral<std::uint8_t>(), 0.5);
  const auto kc = in.ConsumeIntegral<std::uint8_t>();
  const Index sizes[] = {0, -1, C + 1, std::max<Index>(C - 1, 0), std::numeric_limits<Index>::min()};
  const Index n = kc < 200 ? C : sizes[kc % 5];
  const auto seed = in.ConsumeIntegral<std::uint64_t>();
  note(" PartialFCSampler(num_classes=%ld, sample_rate=%a)", static_cast<long>(n), r);
  const bool valid = n >= 1 && r > 0 && r <= 1;
  std::vector<ml::PartialFCSampler> pfc;  // 0 or 1 of them
  const bool ok = guarded_call([&] { pfc.emplace_back(n, r, seed); });
  if (ok != valid) finding("PartialFCSampler: the constructor's verdict on num_classes / sample_rate is wrong");
  if (!ok) return sets;
  const Index quota = std::min(n, std::max<Index>(1, static_cast<Index>(std::round(r * static_cast<double>(n)))));
  if (pfc[0].quota() != quota || pfc[0].num_classes() != n) finding("PartialFCSampler: wrong quota() or num_classes()");
  const int steps = 1 + in.ConsumeIntegral<std::uint8_t>() % 3;
  ml::ActiveSet own;
  for (int s = 0; s < steps; ++s) {
    const bool into = in.ConsumeBool();
    const ml::ActiveSet* a = &own;
    const bool sampled = guarded_call([&] {
      if (into)
        pfc[0].sample(labels, own);
      else
        a = &pfc[0].sample(labels);
    });
    if (sampled != labels_in_range(labels, n)) finding("PartialFCSampler::sample: wrong verdict on the labels");
    if (!sampled) continue;
    check_active_set(*a, labels, n, true, false, "PartialFCSampler::sample returned an invalid ActiveSet");
    Index distinct = 0;
    for (Index i = 0; i < labels.size(); ++i) {
      bool first = true;
      for (Index k = 0; k < i; ++k) first = first && labels(k) != labels(i);
      distinct += first ? 1 : 0;
    }
    if (a->size() != std::max(distinct, quota)) finding("PartialFCSampler::sample: |A| is not max(positives, quota)");
    sets.push_back({*a, valid_active_ids(a->classes, C)});
  }
  return sets;
}

// The miner's neighbours and queues: ids in range, not the class itself, no repeat; neighbour
// similarities non-increasing cosines; queues no longer than the capacity.
template <typename T>
void check_miner(const ml::HardPrototypeMiner<T>& m, Index C, Index k) {
  if (m.num_classes() != C || m.k() != std::min(k, C - 1)) finding("HardPrototypeMiner: wrong num_classes() or k()");
  const auto& nb = m.neighbours();
  const auto& ns = m.neighbour_similarities();
  if (nb.rows() != C || nb.cols() != m.k() || ns.rows() != C || ns.cols() != m.k())
    finding("HardPrototypeMiner: neighbours() has the wrong shape");
  const Index cap = std::max(m.options().queue_capacity, m.k());
  for (Index j = 0; j < C; ++j) {
    for (Index r = 0; r < nb.cols(); ++r) {
      const Index c = nb(j, r);
      if (!(c >= 0 && c < C) || c == j) finding("HardPrototypeMiner: a neighbour out of range or the class itself");
      for (Index q = 0; q < r; ++q)
        if (nb(j, q) == c) finding("HardPrototypeMiner: a neighbour listed twice");
      const double v = static_cast<double>(ns(j, r));
      if (!(std::fabs(v) <= 1.001)) finding("HardPrototypeMiner: a neighbour similarity that is not a cosine");
      if (r > 0 && !(static_cast<double>(ns(j, r - 1)) >= v))
        finding("HardPrototypeMiner: neighbours not by decreasing similarity");
    }
    const auto q = m.queue(j);
    if (q.size() > cap) finding("HardPrototypeMiner: a queue longer than its capacity");
    for (Index r = 0; r < q.size(); ++r) {
      if (!(q(r) >= 0 && q(r) < C) || q(r) == j)
        finding("HardPrototypeMiner: a queued class out of range or the class itself");
      for (Index s = 0; s < r; ++s)
        if (q(s) == q(r)) finding("HardPrototypeMiner: a class queued twice");
    }
  }
  for (const Index j : {Index(-1), C})
    if (guarded_call([&] { (void)m.queue(j); })) finding("HardPrototypeMiner::queue accepted a class out of range");
}

template <typename MX, typename MW, typename L>
std::vector<SampledSet> hard_prototype_sets(FuzzedDataProvider& in, const MX& X, const MW& W, const L& labels) {
  using T = typename MX::Scalar;
  const Index B = X.rows(), D = X.cols(), C = W.rows();
  std::vector<SampledSet> sets;
  ml::HardPrototypeMinerOptions o;
  o.k = count_value(in.ConsumeIntegral<std::uint8_t>());
  o.h = setting_value(in.ConsumeIntegral<std::uint8_t>(), 0.25);
  o.queue_capacity = count_value(in.ConsumeIntegral<std::uint8_t>());
  o.refresh_every = count_value(in.ConsumeIntegral<std::uint8_t>());
  o.max_active = count_value(in.ConsumeIntegral<std::uint8_t>());
  o.tile_rows = count_value(in.ConsumeIntegral<std::uint8_t>());
  o.tile_cols = count_value(in.ConsumeIntegral<std::uint8_t>());
  note(" HardPrototypeMiner(k=%ld h=%a capacity=%ld", static_cast<long>(o.k), o.h, static_cast<long>(o.queue_capacity));
  note(" refresh=%ld max_active=%ld tiles=%ldx%ld)", static_cast<long>(o.refresh_every),
       static_cast<long>(o.max_active), static_cast<long>(o.tile_rows), static_cast<long>(o.tile_cols));
  const bool valid = o.k >= 1 && std::isfinite(o.h) && o.queue_capacity >= 0 && o.refresh_every >= 0 &&
                     o.max_active >= 0 && o.tile_rows >= 1 && o.tile_cols >= 1;
  std::vector<ml::HardPrototypeMiner<T>> miner;  // 0 or 1 of them
  const bool ok = guarded_call([&] { miner.emplace_back(o); });
  if (ok != valid) finding("HardPrototypeMiner: the constructor's verdict on the options is wrong");
  if (!ok) return sets;
  auto& m = miner[0];
  const auto how = in.ConsumeIntegral<std::uint8_t>();
  const bool built = guarded_call([&] {
    if (how & 1)
      m.build(W);
    else if (!m.step(W))
      finding("HardPrototypeMiner::step did not build on its first call");
  });
  if (!built) {
    if (guarded_call([&] { (void)m.active_set(labels); }))
      finding("HardPrototypeMiner::active_set returned before any build");
    return sets;
  }
  if (C < 2 || D < 1) finding("HardPrototypeMiner::build accepted W with fewer than 2 rows or no columns");
  check_miner(m, C, o.k);
  const int steps = 1 + in.ConsumeIntegral<std::uint8_t>() % 3;
  ml::ActiveSet own;
  for (int s = 0; s < steps; ++s) {
    const auto action = in.ConsumeIntegral<std::uint8_t>();
    if (action & 1) guarded_call([&] { (void)m.step(W); });  // a refresh when due: W was accepted before
    const ml::ActiveSet* a = &own;
    const bool got = guarded_call([&] {
      if (action & 2)
        m.active_set(labels, own);
      else
        a = &m.active_set(labels);
    });
    if (got != labels_in_range(labels, C)) finding("HardPrototypeMiner::active_set: wrong verdict on the labels");
    if (!got) continue;
    check_active_set(*a, labels, C, false, true, "HardPrototypeMiner::active_set returned an invalid ActiveSet");
    Index distinct = 0;
    for (Index i = 0; i < labels.size(); ++i) {
      bool first = true;
      for (Index k = 0; k < i; ++k) first = first && labels(k) != labels(i);
      distinct += first ? 1 : 0;
    }
    if (o.max_active > 0 && a->size() > std::max(o.max_active, distinct))
      finding("HardPrototypeMiner::active_set exceeds max_active");
    const ml::ActiveSet set = *a;  // a copy: the miner's own set changes with the next call
    sets.push_back({set, true});
    // The queue rule from this step's cosines, from a score matrix (fuzzed, NaN included), or
    // from a corrupted set (must throw).
    const auto rule = in.ConsumeIntegral<std::uint8_t>();
    if (rule < 96) {
      guarded_call([&] { m.update(X, W, set); });  // rejects X's bad rows like the loss
    } else if (rule < 128) {
      // From the loss's kept cosines (a plain CosFace subset call on this set), or the
      // miner's rejection of a SubsetWorkspace without them.
      ml::SubsetWorkspace<T> sws;
      ml::SubsetOptions so;
      so.keep_cosines = rule & 1;
      Mat<T> dX(B, X.cols()), dW(W.rows(), W.cols());
      const bool loss_ok =
          guarded_call([&] { (void)ml::forward_backward(ml::CosFace<T>{T(8), T(0.2)}, X, W, set, {dX, dW}, sws, so); });
      const bool rule_ok = guarded_call([&] { m.update(sws, W, set); });
      if (rule_ok && !(loss_ok && so.keep_cosines))
        finding("HardPrototypeMiner::update(sws, ...) accepted a SubsetWorkspace without kept cosines");
    } else if (rule < 192) {
      Mat<T> scores(B, set.size());
      for (Index i = 0; i < B; ++i)
        for (Index c = 0; c < set.size(); ++c) scores(i, c) = entry<T>(in, 1.0);
      if (!guarded_call([&] { m.update_from_scores(scores, W, set); }))
        finding("HardPrototypeMiner::update_from_scores rejected a valid set and score matrix");
    } else {
      ml::ActiveSet bad = set;
      if (rule & 1)
        bad.classes(rule % bad.size()) = (rule & 2) ? C : -1;
      else
        bad.local_labels(rule % B) = (rule & 2) ? set.size() : -1;
      if (guarded_call([&] { m.update_from_scores(Mat<T>::Zero(B, set.size()), W, bad); }))
        finding("HardPrototypeMiner::update_from_scores accepted a set with an id or local label out of range");
    }
    check_miner(m, C, o.k);
    const auto extra = in.ConsumeIntegral<std::uint8_t>();
    if (extra >= 160) {
      const double h = setting_value(extra, 0.5);
      if (guarded_call([&] { m.set_threshold(h); }) != std::isfinite(h))
        finding("HardPrototypeMiner::set_threshold: wrong verdict");
      if (!guarded_call([&] { m.prune_all(W); }))
        finding("HardPrototypeMiner::prune_all rejected the W it was built on");
      if (guarded_call([&] { m.prune_all(W.topRows(C - 1)); }))
        finding("HardPrototypeMiner::prune_all accepted W with another row count");
      for (Index j = 0; j < C; ++j)
        for (Index r = 0; r < m.queue(j).size(); ++r) {
          const Index c = m.queue(j)(r);
          double dot = 0;
          const double nj = norm_of_row(W, j), nc = norm_of_row(W, c);
          for (Index d = 0; d < D; ++d)
            dot += (static_cast<double>(W(j, d)) / nj) * (static_cast<double>(W(c, d)) / nc);
          if (!(dot > m.threshold() - 1e-9))
            finding("HardPrototypeMiner: a queued class at similarity <= h after prune_all");
        }
    } else if (extra >= 128) {
      if (!guarded_call([&] { m.refresh(W); })) finding("HardPrototypeMiner::refresh rejected the W it was built on");
    }
    check_miner(m, C, o.k);
  }
  return sets;
}

// AdaptiveSampler over N samples: construction (settings incl. invalid ones), draws, updates
// with correctness flags and target cosines (indices incl. out of range, of several types;
// lengths that differ), set_weight. Invariants: weights in [floor, cap], the sum tree's root
// their sum, draws in [0, N); a rejected update leaves every weight as it was.
template <typename T>
void adaptive_sampler_calls(FuzzedDataProvider& in, const ml::Vector<T>* target) {
  const Index B = target ? target->size() : 0;
  const auto kn = in.ConsumeIntegral<std::uint8_t>();
  const Index sizes[] = {0,
                         -1,
                         1,
                         2,
                         3,
                         17,
                         1000,
                         std::numeric_limits<Index>::max(),
                         (Index(1) << 62) + 1,
                         std::numeric_limits<Index>::min()};
  const Index N = kn < 160 ? std::max<Index>(B, 1) + kn % 8 : sizes[kn % 10];
  ml::AdaptiveSamplerOptions o;
  const auto mask = in.ConsumeIntegral<std::uint8_t>();
  if (mask & 1) o.down = setting_value(in.ConsumeIntegral<std::uint8_t>(), 0.8);
  if (mask & 2) o.up = setting_value(in.ConsumeIntegral<std::uint8_t>(), 1.5);
  if (mask & 4) o.floor = setting_value(in.ConsumeIntegral<std::uint8_t>(), 0.1);
  if (mask & 8) o.cap = setting_value(in.ConsumeIntegral<std::uint8_t>(), 10);
  if (mask & 16) o.noise_threshold = setting_value(in.ConsumeIntegral<std::uint8_t>(), 0.1);
  if (mask & 32) o.noise_factor = setting_value(in.ConsumeIntegral<std::uint8_t>(), 0.05);
  const auto seed = in.ConsumeIntegral<std::uint64_t>();
  note(" AdaptiveSampler(N=%lld down=%a up=%a floor=%a", static_cast<long long>(N), o.down, o.up, o.floor);
  note(" cap=%a noise_threshold=%a noise_factor=%a)", o.cap, o.noise_threshold, o.noise_factor);
  // The documented settings; sizes whose sum tree cannot be held (N > INT64_MAX / 32) and caps
  // whose N-fold total overflows are rejected. Sizes that can be held but not allocated here
  // (2^40) are not fuzzed: only N <= 1000 and N >= 2^62.
  const bool valid = N >= 1 && N <= std::numeric_limits<Index>::max() / 32 && o.down > 0 && o.down <= 1 && o.up >= 1 &&
                     std::isfinite(o.up) && o.floor > 0 && std::isfinite(o.floor) && o.cap >= o.floor &&
                     std::isfinite(o.cap) && std::isfinite(o.cap * static_cast<double>(N)) && o.noise_factor > 0 &&
                     o.noise_factor <= 1 && !std::isnan(o.noise_threshold);
  std::vector<ml::AdaptiveSampler> sampler;  // 0 or 1 of them
  const bool ok = guarded_call([&] { sampler.emplace_back(N, seed, o); });
  if (ok != valid) finding("AdaptiveSampler: the constructor's verdict on the settings is wrong");
  if (!ok) return;
  auto& s = sampler[0];
  auto weights = [&] {
    std::vector<double> w(static_cast<std::size_t>(N));
    for (Index k = 0; k < N; ++k) w[static_cast<std::size_t>(k)] = s.weight(k);
    return w;
  };
  auto check = [&] {
    double sum = 0;
    for (Index k = 0; k < N; ++k) {
      const double w = s.weight(k);  // 1 until updated (documented), then clamped to [floor, cap]
      if (!(w >= o.floor && w <= o.cap) && w != 1.0) finding("AdaptiveSampler: a weight outside [floor, cap]");
      sum += w;
      const double p = s.probability(k);
      if (!(p > 0 && p <= 1)) finding("AdaptiveSampler: a probability outside (0, 1]");
    }
    if (!(std::fabs(s.total_weight() - sum) <= 1e-9 * sum) || !std::isfinite(s.total_weight()))
      finding("AdaptiveSampler: total_weight() is not the (finite) sum of the weights");
    for (const Index k : {Index(-1), N})
      if (guarded_call([&] { (void)s.weight(k); })) finding("AdaptiveSampler::weight accepted an index out of range");
  };
  check();
  const int steps = 1 + in.ConsumeIntegral<std::uint8_t>() % 3;
  for (int step = 0; step < steps; ++step) {
    const auto kc = in.ConsumeIntegral<std::uint8_t>();
    const Index count = kc < 224 ? (kc < 128 ? B : kc % 9) : (kc % 2 ? -1 : std::numeric_limits<Index>::min());
    ml::IndexVector idx;
    const bool drawn = guarded_call([&] {
      if (kc & 1)
        s.draw(count, idx);
      else
        idx = s.draw(count);
    });
    if (drawn != (count >= 0)) finding("AdaptiveSampler::draw: wrong verdict on count");
    if (!drawn) continue;
    if (idx.size() != count) finding("AdaptiveSampler::draw returned the wrong number of indices");
    for (Index i = 0; i < idx.size(); ++i)
      if (!(idx(i) >= 0 && idx(i) < N)) finding("AdaptiveSampler::draw returned an index out of range");
    // Feedback: correctness flags (sometimes of another length), an index sometimes corrupted.
    const auto kf = in.ConsumeIntegral<std::uint8_t>();
    Eigen::VectorXi correct(idx.size() + ((kf & 3) == 3 ? 1 : 0));
    for (Index i = 0; i < correct.size(); ++i) correct(i) = in.ConsumeBool();
    bool valid_update = correct.size() == idx.size();
    Eigen::Matrix<std::uint64_t, Eigen::Dynamic, 1> uidx = idx.cast<std::uint64_t>();
    if ((kf & 12) == 12 && idx.size() > 0) {
      const Index at = kf % idx.size();
      const std::uint64_t bad[] = {std::uint64_t(N), ~std::uint64_t(0), std::uint64_t(1) << 63,
                                   std::uint64_t(N) + (std::uint64_t(1) << 32)};
      uidx(at) = bad[(kf >> 4) % 4];
      idx(at) = static_cast<Index>(uidx(at));
      valid_update = false;
    }
    const bool with_cosines = (kf & 16) && target;
    ml::Vector<T> t;
    if (with_cosines) {
      t = target->head(std::min(B, idx.size()));
      if (t.size() != idx.size()) valid_update = false;
    }
    const auto before = weights();
    const bool updated = guarded_call([&] {
      if (with_cosines) {
        if (kf & 32)
          s.update(uidx, correct, t);
        else
          s.update(idx, correct, t);
      } else if (kf & 32) {
        s.update(uidx, correct);
      } else {
        s.update(idx, correct);
      }
    });
    if (updated != valid_update) finding("AdaptiveSampler::update: wrong verdict on the indices or lengths");
    if (!updated && weights() != before) finding("AdaptiveSampler::update threw after changing weights");
    const auto kw = in.ConsumeIntegral<std::uint8_t>();
    if (kw >= 192) {
      const Index n = kw % 4 == 3 ? N : static_cast<Index>(kw % 4) - 1;  // -1, 0, 1, N
      const double w = setting_value(in.ConsumeIntegral<std::uint8_t>(), 1.0);
      const bool set = guarded_call([&] { s.set_weight(n, w); });
      if (set != (n >= 0 && n < N && std::isfinite(w))) finding("AdaptiveSampler::set_weight: wrong verdict");
    }
    check();
  }
}

// The active set: explicit ids (half of the inputs), or from PartialFCSampler or
// HardPrototypeMiner (a quarter each).
template <typename P, typename MX, typename MW, typename L>
void subset_calls(const P& policy, FuzzedDataProvider& in, const MX& X, const MW& W, const L& labels, Index pad) {
  const Index C = W.rows();
  const auto source = in.ConsumeIntegral<std::uint8_t>() % 4;
  if (source >= 2) {
    const auto sets = source == 2 ? partial_fc_sets(in, C, labels) : hard_prototype_sets(in, X, W, labels);
    for (const SampledSet& s : sets) subset_with(policy, in, X, W, s.set.classes, s.valid, pad, &s.set.local_labels);
    return;
  }
  // A prefix of a permutation of the classes, or all of them plus a repeat, sometimes corrupted.
  std::vector<Index> perm(static_cast<std::size_t>(C));
  for (Index j = 0; j < C; ++j) perm[static_cast<std::size_t>(j)] = j;
  for (Index j = C - 1; j > 0; --j) std::swap(perm[static_cast<std::size_t>(j)], perm[static_cast<std::size_t>(in.ConsumeIntegralInRange<Index>(0, j))]);
  const Index A = in.ConsumeIntegralInRange<Index>(0, C + 1);
  std::vector<std::uint64_t> raw(static_cast<std::size_t>(A));
  for (Index a = 0; a < A; ++a)
    raw[static_cast<std::size_t>(a)] = C > 0 ? static_cast<std::uint64_t>(perm[static_cast<std::size_t>(a % C)]) : 0;
  const auto corrupt = in.ConsumeIntegral<std::uint8_t>();
  if (corrupt >= 192 && A >= 1) {
    const auto at = static_cast<std::size_t>(corrupt % A);
    switch ((corrupt >> 3) % 6) {
      case 0: raw[at] = raw[(at + 1) % raw.size()]; break;  // a duplicate (unless A == 1)
      case 1: raw[at] = ~std::uint64_t(0); break;           // -1
      case 2: raw[at] = static_cast<std::uint64_t>(C); break;
      case 3: raw[at] = std::uint64_t(1) << 63; break;      // >= 2^63 unsigned, INT64_MIN signed, 0 as int32
      case 4: raw[at] = (std::uint64_t(1) << 32) + raw[at]; break;  // in range once truncated to 32 bits
      default: raw[at] = std::uint64_t(1) << 31; break;     // INT32_MIN as int32
    }
  }
  const int kind = in.ConsumeIntegralInRange<int>(0, 2);
  note(" active=%s", kind == 0 ? "int32" : (kind == 1 ? "int64" : "uint64"));
  auto go = [&](auto tag) {
    using I = decltype(tag);
    Eigen::Matrix<I, Eigen::Dynamic, 1> active(A);
    for (Index a = 0; a < A; ++a) active(a) = static_cast<I>(raw[static_cast<std::size_t>(a)]);
    subset_with(policy, in, X, W, active, valid_active_ids(active, C), pad);
  };
  if (kind == 0) go(std::int32_t{});
  else if (kind == 1) go(Index{});
  else go(std::uint64_t{});
}

// ------------------------------------------------------------------------------------------
// target_cosines.

template <typename P, typename MX, typename MW, typename L>
void target_cosine_calls(const P& policy, FuzzedDataProvider& in, const MX& X, const MW& W, const L& labels) {
  using T = typename P::value_type;
  const Index B = X.rows();
  const auto k = in.ConsumeIntegral<std::uint8_t>();
  const Index n = (k & 1) ? ((k & 2) && B > 0 ? B - 1 : B + 1) : B;
  note(" out=%ld", static_cast<long>(n));
  ml::Vector<T> t;
  const bool ok = guarded_call([&] { t = ml::target_cosines(X, W, labels); });
  GuardedVec<T> out(n);
  const bool ok2 = guarded_call([&] { ml::target_cosines(X, W, labels, out.view()); });
  if (!out.guards_intact()) finding("target_cosines wrote outside its output");
  if (ok2 && n != B) finding("target_cosines accepted an output of the wrong length");
  if (n == B && ok != ok2) finding("target_cosines: the allocating form and the form into a vector disagree");
  // AdaptiveSampler fed with these target cosines (its noise rule) where they exist.
  if (in.ConsumeBool()) adaptive_sampler_calls<T>(in, ok ? &t : nullptr);
  if (!ok) return;
  if (t.size() != B) finding("target_cosines returned a vector of the wrong length");
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  for (Index i = 0; i < B; ++i) {
    const Index y = static_cast<Index>(labels(i));
    const double xn = norm_of_row(X, i), wn = norm_of_row(W, y);
    double dot = 0;
    for (Index c = 0; c < X.cols(); ++c)
      dot += (static_cast<double>(X(i, c)) / xn) * (static_cast<double>(W(y, c)) / wn);
    dot = std::min(1.0, std::max(-1.0, dot));
    if (!(std::fabs(static_cast<double>(t(i))) <= 1) || !(std::fabs(static_cast<double>(t(i)) - dot) <= tol)) {
      std::fprintf(stderr, "target_cosines(%ld) = %a, reference %a\n", static_cast<long>(i), static_cast<double>(t(i)), dot);
      finding("target_cosines returned a wrong cosine");
    }
    if (ok2 && !(out.view()(i) == t(i))) finding("target_cosines: the two forms give other values");
  }
  if constexpr (stateful_v<P>) {
    // The documented use: tau from the batch's target cosines, then the loss.
    P q = policy;
    guarded_call([&] {
      curricular_of(q).update_tau(t);
      const auto r = ml::forward_backward(q, X, W, labels);
      if (!check_loss(r.loss, "loss (CurricularFace after update_tau)")) return;
      if (!check_matrix(r.dX, "dX (CurricularFace after update_tau)")) return;
      check_matrix(r.dW, "dW (CurricularFace after update_tau)");
      // The engine's update (update_tau_in_forward) is the same update, before the same loss.
      P e = with_tau_update(policy, true);
      const auto re = ml::forward_backward(e, X, W, labels);
      if (!same_state(e, q))
        finding("CurricularFace: the forward's tau update differs from update_tau(target_cosines)");
      if (!(re.loss == r.loss) || !(re.dX == r.dX) || !(re.dW == r.dW))
        finding("CurricularFace: the loss with the forward's tau update differs from the manual update");
    });
  }
}

// ------------------------------------------------------------------------------------------
// CurricularFace (alone or under ClassMargins) with update_tau_in_forward = true: every
// forward entry point updates tau in the policy it is given, which must be a modifiable
// lvalue. For the entry point chosen, the same call must
//   * throw invalid_argument for the policy passed const and passed as a temporary;
//   * with a modifiable copy, leave exactly the tau of the documented manual update
//     (update_tau(target_cosines(X, W, labels)) on a copy with update_tau_in_forward = false)
//     and return exactly that copy's results -- or throw where that copy's call throws (and
//     wherever target_cosines rejects the batch).

template <typename T>
struct Outputs {
  T loss = T(0);
  Mat<T> dX, dW;
};

template <typename P, typename L>
void check_stateful(const P& policy, const char* entry, bool manual_ok, const P& manual, const L& call) {
  using T = typename P::value_type;
  static_assert(!learnable_v<P>, "no stateful policy has learnable margins");
  note(" stateful entry=%s", entry);
  Outputs<T> op, oq, oc;
  if (guarded_call([&] { call(policy, oc); }))
    finding("a policy with update_tau_in_forward = true was accepted as const");
  if (guarded_call([&] { call(P(policy), oc); }))
    finding("a policy with update_tau_in_forward = true was accepted as a temporary");
  P p = policy;
  P q = manual;
  const bool ok_p = guarded_call([&] { call(p, op); });
  if (!manual_ok) {
    if (ok_p) finding("a forward updating tau accepted a batch that target_cosines() rejects");
    return;
  }
  const bool ok_q = guarded_call([&] { call(q, oq); });
  if (ok_p != ok_q) finding("the forward's tau update and the manual update disagree on rejecting the call");
  if (!ok_p) return;
  if (!same_state(p, q)) {
    std::fprintf(stderr, "tau %a (forward) vs %a (manual)\n", static_cast<double>(curricular_of(p).tau),
                 static_cast<double>(curricular_of(q).tau));
    finding("the forward's tau update differs from update_tau(target_cosines)");
  }
  if (!check_loss(op.loss, "loss (stateful)") || !check_matrix(op.dX, "dX (stateful)") ||
      !check_matrix(op.dW, "dW (stateful)"))
    return;
  if (!(op.loss == oq.loss) || !same_values(op.dX, oq.dX) || !same_values(op.dW, oq.dW))
    finding("the results with the forward's tau update differ from those after the manual update");
}

template <typename P, typename MX, typename MW, typename L>
void stateful_dense_calls(const P& policy, FuzzedDataProvider& in, const MX& X, const MW& W, const L& labels, Index pad,
                          typename P::value_type grad_loss, unsigned entry_point) {
  using T = typename P::value_type;
  const Index B = X.rows(), D = X.cols(), C = W.rows();
  // The documented manual update, on a copy that does not update in its forward.
  P manual = with_tau_update(policy, false);
  const bool manual_ok = guarded_call([&] { curricular_of(manual).update_tau(ml::target_cosines(X, W, labels)); });
  const ml::Options o = options_of(in.ConsumeIntegral<std::uint8_t>());
  switch (entry_point % 6) {
    case 0:
      check_stateful(policy, "allocating forward_backward", manual_ok, manual, [&](auto&& p, Outputs<T>& out) {
        auto r = ml::forward_backward(std::forward<decltype(p)>(p), X, W, labels, o);
        out.loss = r.loss;
        out.dX = std::move(r.dX);
        out.dW = std::move(r.dW);
      });
      break;
    case 1:
      check_stateful(policy, "workspace forward_backward", manual_ok, manual, [&](auto&& p, Outputs<T>& out) {
        ml::Workspace<T> ws;
        out.dX.resize(B, D);
        out.dW.resize(C, D);
        out.loss = ml::forward_backward(std::forward<decltype(p)>(p), X, W, labels, {out.dX, out.dW}, ws, o);
      });
      break;
    case 2:
      // The context holds the policy as its forward updated it, which its backward uses (the
      // fingerprint is the updated one).
      check_stateful(policy, "forward + backward", manual_ok, manual, [&](auto&& p, Outputs<T>& out) {
        ml::Workspace<T> ws;
        const auto fwd = ml::forward(std::forward<decltype(p)>(p), X, W, labels, ws, o);
        if (!same_state(fwd.policy(), p)) finding("Forward::policy() is not the policy as its forward updated it");
        out.loss = fwd.loss();
        out.dX.resize(B, D);
        out.dW.resize(C, D);
        ml::backward(fwd, grad_loss, {out.dX, out.dW});
      });
      break;
    case 3:
      check_stateful(policy, "forward_backward with a Shard (one rank)", manual_ok, manual,
                     [&](auto&& p, Outputs<T>& out) {
        ml::Workspace<T> ws;
        ml::LocalCommunicator comm;
        out.dX.resize(B, D);
        out.dW.resize(C, D);
        out.loss = ml::forward_backward(std::forward<decltype(p)>(p), X, W, labels, {out.dX, out.dW}, ws,
                                        ml::Shard{Index(0), C, comm}, o);
      });
      break;
    case 4: {
      note("%s", " stateful entry=multi-rank sharded");
      const auto r = multi_rank_calls(policy, in, X, W, index_labels(labels), pad, grad_loss);
      if (r.all_returned) {
        if (!manual_ok) finding("a multi-rank forward updating tau accepted a batch that target_cosines() rejects");
        for (const P& p : r.policies)
          if (!same_state(p, manual))
            finding("a multi-rank forward's tau update differs from update_tau(target_cosines)");
      }
      break;
    }
    default: {
      // The subset: the batch's classes first, then other classes, |A| fuzzed (the target
      // cosines, so the update, are those of the full W).
      std::vector<Index> order;
      std::vector<char> seen(static_cast<std::size_t>(C), 0);
      bool labels_ok = true;
      for (Index i = 0; i < B; ++i) {
        const Index y = static_cast<Index>(labels(i));
        const bool ok = std::is_unsigned_v<typename L::Scalar>
                            ? static_cast<std::uint64_t>(labels(i)) < static_cast<std::uint64_t>(C)
                            : (y >= 0 && y < C);
        labels_ok = labels_ok && ok;
        if (ok && !seen[static_cast<std::size_t>(y)]) seen[static_cast<std::size_t>(y)] = 1, order.push_back(y);
      }
      for (Index j = 0; j < C; ++j)
        if (!seen[static_cast<std::size_t>(j)]) order.push_back(j);
      const Index distinct = static_cast<Index>(std::count(seen.begin(), seen.end(), 1));
      const Index A = in.ConsumeIntegralInRange<Index>(std::min<Index>(distinct, C), C);
      ml::IndexVector active(A), local(B);
      for (Index a = 0; a < A; ++a) active(a) = order[static_cast<std::size_t>(a)];
      for (Index i = 0; i < B; ++i) {
        local(i) = A;  // out of range unless found
        for (Index a = 0; a < A && labels_ok; ++a)
          if (active(a) == static_cast<Index>(labels(i))) local(i) = a;
      }
      note(" A=%ld", static_cast<long>(A));
      const ml::ActiveSet set{active, local};
      check_stateful(policy, "forward_backward over an ActiveSet", manual_ok, manual, [&](auto&& p, Outputs<T>& out) {
        ml::SubsetWorkspace<T> sws;
        out.dX.resize(B, D);
        out.dW = Mat<T>::Zero(C, D);
        out.loss = ml::forward_backward(std::forward<decltype(p)>(p), X, W, set, {out.dX, out.dW}, sws);
      });
      break;
    }
  }
}

template <typename P, typename MC, typename L>
void stateful_cosine_calls(const P& policy, const MC& cos, const L& labels,
                           const ml::Vector<typename P::value_type>& scales, unsigned entry_point) {
  using T = typename P::value_type;
  const Index B = cos.rows(), C = cos.cols();
  // The manual update from the clamped target cosines (rows the engine rejects make it throw).
  P manual = with_tau_update(policy, false);
  bool manual_ok = B > 0;
  ml::Vector<T> t(B);
  for (Index i = 0; i < B && manual_ok; ++i) {
    const Index y = static_cast<Index>(labels(i));
    manual_ok = std::is_unsigned_v<typename L::Scalar>
                    ? static_cast<std::uint64_t>(labels(i)) < static_cast<std::uint64_t>(C)
                    : (y >= 0 && y < C);
    if (manual_ok) t(i) = std::min(T(1), std::max(T(-1), cos(i, y)));
  }
  if (manual_ok) manual_ok = guarded_call([&] { curricular_of(manual).update_tau(t); });
  const char* names[] = {"allocating cosine_forward_backward", "cosine_forward_backward into dcos",
                         "cosine_forward_backward with scales"};
  check_stateful(policy, names[entry_point % 3], manual_ok, manual, [&](auto&& p, Outputs<T>& out) {
    if (entry_point % 3 == 0) {
      auto r = ml::cosine_forward_backward(std::forward<decltype(p)>(p), cos, labels);
      out.loss = r.loss;
      out.dX = std::move(r.dcos);
    } else if (entry_point % 3 == 1) {
      out.dX.resize(B, C);
      out.loss = ml::cosine_forward_backward(std::forward<decltype(p)>(p), cos, labels, out.dX);
    } else {
      out.dX.resize(B, C);
      ml::Vector<T> ds(B);
      out.loss = ml::cosine_forward_backward(std::forward<decltype(p)>(p), cos, labels, scales, out.dX, ds);
      out.dW = ds.transpose();
    }
  });
}

// ------------------------------------------------------------------------------------------
// Dense entry points.

template <typename P, typename Labels>
void dense_calls(const P& policy, FuzzedDataProvider& in, Index B, Index D, Index C, const Labels& labels) {
  using T = typename P::value_type;
  constexpr bool learnable = learnable_v<P>;
  const auto mode = in.ConsumeIntegral<std::uint8_t>();
  const Index pad = 1 + (mode >> 6);
  const Index M = learnable ? C : 0;  // dmargins entries

  // W first, so rows of X can be exact multiples of their class weight (cosine exactly +-1).
  // W lies at the top of a buffer of max(B, C) rows, so that a dX view can alias it.
  Guarded<T> Wg(std::max(B, C), D, pad), Xg(B, D, pad);
  StridedMap<T> W(Wg.buf.data(), C, D, Eigen::OuterStride<>(Wg.stride));
  auto X = Xg.view();
  fill_rows<T>(in, W);
  fill_rows<T>(in, X);
  for (Index i = 0; i < B; ++i) {
    const auto k = in.ConsumeIntegral<std::uint8_t>();
    if (k >= 64 || C == 0 || D == 0) continue;
    const Index y = static_cast<Index>(k) % C;
    const T factor = (k & 1) ? T(-0.75) : T(2);
    X.row(i) = factor * W.row(y);
  }

  const T grad_loss = hyper<T>(in, 1.0, "grad_loss");
  auto entry_point = mode % 8;
  if (learnable && entry_point == 5) entry_point = 6;  // no sharded entry points for learnable margins
  {
    const Envelope e = envelope_of(policy);
    double x_min = std::numeric_limits<double>::infinity(), x_max = 0, w_min = x_min;
    for (Index i = 0; i < B; ++i) x_min = std::min(x_min, norm_of_row(X, i)), x_max = std::max(x_max, norm_of_row(X, i));
    for (Index j = 0; j < C; ++j) w_min = std::min(w_min, norm_of_row(W, j));
    const double S = policy.scale_is_feature_norm() ? x_max : std::fabs(static_cast<double>(policy.scale(T(1))));
    const double g = std::max(1.0, std::fabs(static_cast<double>(grad_loss)));
    const double inv = std::max({1.0, 1 / x_min, 1 / w_min});
    g_overflow_expected = beyond_range<T>(S * e.F + e.loss_extra,
                                          4 * g * S * e.slope * inv * static_cast<double>(std::max<Index>({B, C, 1})) +
                                              4 * g * (S + e.grad_extra));
  }
  const char* names[] = {"allocating forward_backward + workspace form",
                         "workspace forward_backward",
                         "forward + backward into caller-allocated outputs",
                         "forward + backward into views",
                         "split API with mismatched calls",
                         "sharded (one rank)",
                         "forward_backward over an ActiveSet",
                         "target_cosines"};
  note(" entry=%s pad=%ld", names[entry_point], static_cast<long>(pad));
  g_dump = [&] {
    dump_matrix("X", X);
    dump_matrix("W", W);
    dump_labels(labels);
    if (g_dump_margins) g_dump_margins();
  };
  if constexpr (stateful_v<P>)
    if (updates_tau(policy)) {
      stateful_dense_calls(policy, in, X, W, labels, pad, grad_loss, entry_point);
      if (!Xg.guards_intact() || !Wg.guards_intact()) finding("an entry point wrote into X's or W's padding");
      return;
    }

  if (entry_point == 0) {  // allocating forward_backward, with default or fuzzed Options
    const ml::Options o = (mode & 32) ? options_of(in.ConsumeIntegral<std::uint8_t>()) : ml::Options{};
    guarded_call([&] {
      const auto r =
          (mode & 32) ? ml::forward_backward(policy, X, W, labels, o) : ml::forward_backward(policy, X, W, labels);
      if (margins_must_throw(policy, C))
        finding("forward_backward accepted a margins vector whose length is not C or a bad margin");
      if (o.class_block < 0) finding("forward_backward accepted Options::class_block < 0");
      if (!check_loss(r.loss, "loss (allocating forward_backward)")) return;
      if (!check_matrix(r.dX, "dX (allocating forward_backward)")) return;
      if (!check_matrix(r.dW, "dW (allocating forward_backward)")) return;
      if (r.dmargins.size() != M) finding("Result::dmargins has the wrong length");
      if (!check_matrix(r.dmargins, "dmargins (allocating forward_backward)")) return;
      if (!learnable && !(r.regulariser == T(0)))
        finding("Result::regulariser is not 0 for a policy without learnable margins");
      if (!std::isfinite(r.regulariser)) non_finite("regulariser");
      // The workspace form into strided outputs, on a workspace that held a larger problem
      // first, gives the same values and writes nothing outside the views.
      ml::Workspace<T> ws;
      ws.reserve(B + 3, D + 2, C + 5);
      Guarded<T> dXg(B, D, pad), dWg(C, D, pad);
      GuardedVec<T> dmg(M);
      const T loss = fb_into(policy, X, W, labels, dXg.view(), dWg.view(), dmg.view(), ws, o);
      if (!dXg.guards_intact() || !dWg.guards_intact() || !dmg.guards_intact())
        finding("forward_backward wrote outside dX/dW/dmargins");
      if (!(loss == r.loss) || !same_values(dXg.view(), r.dX) || !same_values(dWg.view(), r.dW) ||
          !same_values(dmg.view(), r.dmargins) || !(ws.regulariser() == r.regulariser))
        finding("workspace form differs from the allocating form");
    });
  } else if (entry_point == 1) {  // workspace forward_backward, possibly with wrong output shapes
    const ml::Options o = options_of(in.ConsumeIntegral<std::uint8_t>());
    guarded_call([&] {
      const Index bx = (mode & 16) ? B + 1 : B, cw = (mode & 32) ? std::max<Index>(C - 1, 0) : C;
      const Index nm = learnable && (mode & 8) ? C + 1 : M;
      Guarded<T> dXg(bx, D, pad), dWg(cw, D, pad);
      GuardedVec<T> dmg(nm);
      ml::Workspace<T> ws;
      const T loss = fb_into(policy, X, W, labels, dXg.view(), dWg.view(), dmg.view(), ws, o);
      if (!dXg.guards_intact() || !dWg.guards_intact() || !dmg.guards_intact())
        finding("forward_backward wrote outside dX/dW/dmargins");
      if (bx != B || cw != C || nm != M) finding("forward_backward accepted wrongly shaped outputs");
      if (o.class_block < 0) finding("forward_backward accepted Options::class_block < 0");
      if (!check_loss(loss, "loss (workspace forward_backward)")) return;
      if (!check_matrix(dXg.view(), "dX (workspace forward_backward)")) return;
      if (!check_matrix(dWg.view(), "dW (workspace forward_backward)")) return;
      if (!check_matrix(dmg.view(), "dmargins (workspace forward_backward)")) return;
      if (ws.holds_forward()) finding("workspace still holds a forward after forward_backward");
    });
    // The wrong dmargins presence (none for learnable margins, C entries for any other policy)
    // is rejected, whatever else is wrong with the call.
    Guarded<T> dXg(B, D, pad), dWg(C, D, pad);
    GuardedVec<T> dmg(std::max<Index>(C, 1));
    ml::Workspace<T> ws;
    if (guarded_call([&] {
          if constexpr (learnable)
            (void)ml::forward_backward(policy, X, W, labels, {dXg.view(), dWg.view()}, ws, o);
          else
            (void)ml::forward_backward(policy, X, W, labels, {dXg.view(), dWg.view(), dmg.view()}, ws, o);
        }))
      finding("forward_backward accepted Gradients whose dmargins presence does not match the policy");
    if (!dXg.guards_intact() || !dWg.guards_intact() || !dmg.guards_intact())
      finding("forward_backward wrote outside dX/dW/dmargins");
  } else if (entry_point <= 3) {  // split forward + backward with an arbitrary upstream gradient
    ml::Workspace<T> ws;
    std::optional<ml::Forward<P>> fwd;
    bool tolerated = false;
    guarded_call([&] {
      fwd.emplace(ml::forward(policy, X, W, labels, ws));
      if (!check_loss(fwd->loss(), "loss (forward)")) {
        tolerated = true;
        return;
      }
      if (!ws.holds_forward()) finding("forward() returned but the workspace holds no forward");
      if (&fwd->workspace() != &ws) finding("Forward::workspace() is not the workspace of its forward");
      if (!std::isfinite(fwd->regulariser())) non_finite("regulariser (forward)");
      if (!learnable && !(fwd->regulariser() == T(0)))
        finding("Forward::regulariser() is not 0 for a policy without learnable margins");
      if (entry_point == 2) {
        // Contiguous outputs the caller allocates (what the old allocating backward returned),
        // through a Gradients built outside the call.
        Mat<T> dX = Mat<T>::Constant(B, D, std::numeric_limits<T>::quiet_NaN());
        Mat<T> dW = Mat<T>::Constant(C, D, std::numeric_limits<T>::quiet_NaN());
        ml::Vector<T> dm = ml::Vector<T>::Constant(M, std::numeric_limits<T>::quiet_NaN());
        if constexpr (learnable) {
          ml::Gradients g{dX, dW, dm};
          ml::backward(*fwd, grad_loss, g);
        } else {
          ml::Gradients g{dX, dW};
          ml::backward(*fwd, grad_loss, g);
        }
        if (!check_matrix(dX, "dX (backward)")) return;
        if (!check_matrix(dW, "dW (backward)")) return;
        if (!check_matrix(dm, "dmargins (backward)")) return;
      } else {
        Guarded<T> dXg(B, D, pad), dWg(C, D, pad);
        GuardedVec<T> dmg(M);
        bwd_into(*fwd, grad_loss, dXg.view(), dWg.view(), dmg.view());
        if (!dXg.guards_intact() || !dWg.guards_intact() || !dmg.guards_intact())
          finding("backward wrote outside dX/dW/dmargins");
        if (!check_matrix(dXg.view(), "dX (backward)")) return;
        if (!check_matrix(dWg.view(), "dW (backward)")) return;
        if (!check_matrix(dmg.view(), "dmargins (backward)")) return;
      }
    });
    // A forward is consumed by one backward: a second one (also after a first that threw) throws.
    if (tolerated || !fwd) return;
    bool threw = false;
    try {
      Guarded<T> dX2(B, D, pad), dW2(C, D, pad);
      GuardedVec<T> dm2(M);
      bwd_into(*fwd, T(1), dX2.view(), dW2.view(), dm2.view());
    } catch (const ml::invalid_argument&) {
      threw = true;
    }
    if (!threw) finding("a second backward() of one forward did not throw");
  } else if (entry_point == 4) {
    split_mismatch(policy, in, X, Wg, C, labels, pad);
  } else if (entry_point == 5) {
    if constexpr (!learnable) sharded_calls(policy, in, X, W, labels, pad, grad_loss);
  } else if (entry_point == 6) {
    subset_calls(policy, in, X, W, labels, pad);
  } else {
    target_cosine_calls(policy, in, X, W, labels);
  }
  if (!Xg.guards_intact()) finding("an entry point wrote into X's padding");
}

// ------------------------------------------------------------------------------------------
// Cosine-level entry points.

template <typename P, typename Labels>
void cosine_calls(const P& policy, FuzzedDataProvider& in, Index B, Index C, const Labels& labels) {
  using T = typename P::value_type;
  const auto mode = in.ConsumeIntegral<std::uint8_t>();
  const Index pad = 1 + (mode >> 6);
  Guarded<T> cg(B, C, pad);
  auto cos = cg.view();
  for (Index i = 0; i < B; ++i)
    for (Index j = 0; j < C; ++j) {
      const auto k = in.ConsumeIntegral<std::uint8_t>();
      // Mostly cosines in [-1, 1] on a 1/112 grid, else edge values (+-1, 1 + 1e-7, 1.001, NaN, ...).
      cos(i, j) = k < 224 ? static_cast<T>((static_cast<double>(k) - 112.0) / 111.0) : special<T>(k - 224u + 26u);
    }
  ml::Vector<T> scales(B);
  for (Index i = 0; i < B; ++i) scales(i) = hyper_value<T>(in, 10.0);

  const auto entry_point = mode % 3;
  {
    const Envelope e = envelope_of(policy);
    double S = std::fabs(static_cast<double>(policy.scale(T(1))));
    if (policy.scale_is_feature_norm() || entry_point == 2) {
      S = 0;
      for (Index i = 0; i < B; ++i) S = std::max(S, std::fabs(static_cast<double>(policy.scale(scales(i)))));
    }
    g_overflow_expected = beyond_range<T>(S * e.F, 4 * S * e.slope_raw);
  }
  const char* names[] = {"allocating cosine_forward_backward", "cosine_forward_backward into dcos",
                         "cosine_forward_backward with scales"};
  note(" entry=%s pad=%ld", names[entry_point], static_cast<long>(pad));
  g_dump = [&] {
    dump_matrix("cos", cos);
    dump_matrix("scales", scales);
    dump_labels(labels);
    if (g_dump_margins) g_dump_margins();
  };
  if constexpr (stateful_v<P>)
    if (updates_tau(policy)) {
      stateful_cosine_calls(policy, cos, labels, scales, entry_point);
      if (!cg.guards_intact()) finding("cosine_forward_backward wrote into its input's padding");
      return;
    }
  // Per-class margins must have one entry per class (C = cos.cols()), each acceptable, as in the
  // dense path.
  const bool must_throw = margins_must_throw(policy, C);
  const bool ok = guarded_call([&] {
    if (entry_point == 0) {
      const auto r = ml::cosine_forward_backward(policy, cos, labels);
      if (!check_loss(r.loss, "loss (allocating cosine_forward_backward)")) return;
      if (!check_matrix(r.dcos, "dcos (allocating cosine_forward_backward)")) return;
    } else if (entry_point == 1) {
      Guarded<T> dg(B, C, pad);
      const T loss = ml::cosine_forward_backward(policy, cos, labels, dg.view());
      if (!dg.guards_intact()) finding("cosine_forward_backward wrote outside dcos");
      if (!check_loss(loss, "loss (cosine_forward_backward)")) return;
      if (!check_matrix(dg.view(), "dcos (cosine_forward_backward)")) return;
    } else {
      Guarded<T> dg(B, C, pad);
      ml::Vector<T> dscales = ml::Vector<T>::Constant(B, std::numeric_limits<T>::quiet_NaN());
      const T loss = ml::cosine_forward_backward(policy, cos, labels, scales, dg.view(), dscales);
      if (!dg.guards_intact()) finding("cosine_forward_backward wrote outside dcos");
      if (!check_loss(loss, "loss (cosine_forward_backward with scales)")) return;
      if (!check_matrix(dg.view(), "dcos (cosine_forward_backward with scales)")) return;
      if (!check_matrix(dscales, "dscales (cosine_forward_backward with scales)")) return;
    }
  });
  if (!cg.guards_intact()) finding("cosine_forward_backward wrote into its input's padding");
  if (ok && must_throw) finding("cosine_forward_backward accepted a margins vector whose length is not C or a bad margin");
}

// ------------------------------------------------------------------------------------------
// Policies.

// Per-class margins: C entries mostly, sometimes another length; values near 0.35, edge
// values (negative, NaN, +-Inf, huge, denormal) or raw bits.
template <typename T>
ml::Vector<T> fuzz_margins(FuzzedDataProvider& in, Index C) {
  const auto k = in.ConsumeIntegral<std::uint8_t>();
  Index n = C;
  if (k >= 224) {
    const Index alt[] = {0, C + 1, std::max<Index>(C - 1, 0), 1};
    n = alt[k % 4];
  }
  ml::Vector<T> m(n);
  for (Index j = 0; j < n; ++j) m(j) = hyper_value<T>(in, 0.35);
  note(" margins=%ld entries", static_cast<long>(n));
  return m;
}
// LDAM margins from fuzzed class counts (margins_from_class_counts: counts of 0, negative and
// huge included, max_margin incl. invalid values), then project_margins (lo > hi must throw).
template <typename T>
ml::Vector<T> ldam_margins(FuzzedDataProvider& in, Index C) {
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> counts(C);
  bool valid = C > 0;
  for (Index k = 0; k < C; ++k) {
    const auto b = in.ConsumeIntegral<std::uint8_t>();
    counts(k) = b < 240 ? b : (b % 3 == 0 ? -1 : (b % 3 == 1 ? std::numeric_limits<std::int64_t>::max() : 1000000));
    valid = valid && counts(k) >= 1;
  }
  const T max_margin = hyper<T>(in, 0.35, "ldam_max_margin");
  valid = valid && std::isfinite(max_margin) && max_margin >= T(0);
  ml::Vector<T> m;
  const bool ok = guarded_call([&] { m = ml::margins_from_class_counts(counts, max_margin); });
  if (ok != valid) finding("margins_from_class_counts: wrong verdict on the counts or max_margin");
  if (!ok) return ml::Vector<T>();  // no margins: the loss must reject the policy
  if (m.size() != C) finding("margins_from_class_counts returned the wrong number of margins");
  for (Index k = 0; k < C; ++k)
    if (!(m(k) >= T(0) && m(k) <= max_margin * (T(1) + 4 * std::numeric_limits<T>::epsilon())))
      finding("margins_from_class_counts returned a margin outside [0, max_margin]");
  const T lo = hyper<T>(in, 0.1, "lo"), hi = hyper<T>(in, 1.0, "hi");
  const bool projected = guarded_call([&] { ml::project_margins(m, lo, hi); });
  if (projected != (lo <= hi)) finding("project_margins: wrong verdict on lo and hi");
  if (projected)
    for (Index k = 0; k < C; ++k)
      if (!(m(k) >= lo && m(k) <= hi)) finding("project_margins left a margin outside [lo, hi]");
  note(" margins=LDAM of %ld classes", static_cast<long>(C));
  return m;
}

// Per-class margins: fuzzed values, LDAM margins from class counts, or a null view.
template <typename P>
void set_margins(P& p, FuzzedDataProvider& in, Index C) {
  if constexpr (is_class_margins<P>::value || is_adaptive<P>::value) {
    using T = typename P::value_type;
    const auto how = in.ConsumeIntegral<std::uint8_t>();
    if (how >= 250) {
      p.margins = ml::ClassValues<T>(nullptr, C);  // must be rejected before any read
      note(" margins=null view of %ld entries", static_cast<long>(C));
    } else if (how >= 200) {
      p.margins = keep_margins(ldam_margins<T>(in, C));
    } else {
      p.margins = keep_margins(fuzz_margins<T>(in, C));
    }
  } else {
    (void)p, (void)in, (void)C;
  }
}

template <typename P>
void run_policy(P policy, FuzzedDataProvider& in, bool cosine_level) {
  const Index B = in.ConsumeIntegralInRange<Index>(0, 16);
  const Index D = in.ConsumeIntegralInRange<Index>(0, 16);
  const Index C = in.ConsumeIntegralInRange<Index>(0, 16);
  note(" B=%ld D=%ld C=%ld", static_cast<long>(B), static_cast<long>(D), static_cast<long>(C));
  set_margins(policy, in, C);
  g_dump_margins = dump_margins_of(policy);
  const auto kind = static_cast<LabelKind>(in.ConsumeIntegralInRange<int>(0, 2));
  note(" labels=%s", kind == LabelKind::int32 ? "int32" : (kind == LabelKind::int64 ? "int64" : "uint64"));
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(B));
  for (auto& r : raw) r = in.ConsumeIntegral<std::uint8_t>();
  auto go = [&](const auto& labels) {
    if constexpr (!learnable_v<P>)
      if (cosine_level) return cosine_calls(policy, in, B, C, labels);
    (void)cosine_level;
    dense_calls(policy, in, B, D, C, labels);
  };
  switch (kind) {
    case LabelKind::int32: go(make_labels<int>(raw, B, C)); break;
    case LabelKind::int64: go(make_labels<std::int64_t>(raw, B, C)); break;
    case LabelKind::uint64: go(make_labels<std::uint64_t>(raw, B, C)); break;
  }
}

ml::Fallback fallback_of(std::uint8_t k) { return enum_or_invalid<ml::Fallback>(k); }
ml::Gradient gradient_of(std::uint8_t k) { return enum_or_invalid<ml::Gradient>(k); }
ml::MarginTarget target_of(std::uint8_t k) { return enum_or_invalid<ml::MarginTarget>(k); }

template <typename P>
void fallback_and_gradient(P& p, FuzzedDataProvider& in) {
  p.fallback = fallback_of(in.ConsumeIntegral<std::uint8_t>());
  p.gradient = gradient_of(in.ConsumeIntegral<std::uint8_t>());
  note(" fallback=%d gradient=%d", int(p.fallback), int(p.gradient));
}

template <typename T>
ml::CosFace<T> make_cosface(FuzzedDataProvider& in) {
  ml::CosFace<T> p;
  p.s = hyper<T>(in, 64, "s");
  p.m = hyper<T>(in, 0.35, "m");
  p.conditional_margin = in.ConsumeBool();
  note(" conditional=%d", int(p.conditional_margin));
  return p;
}
template <typename T>
ml::ArcFace<T> make_arcface(FuzzedDataProvider& in) {
  ml::ArcFace<T> p;
  p.s = hyper<T>(in, 64, "s");
  p.m = hyper<T>(in, 0.5, "m");
  fallback_and_gradient(p, in);
  return p;
}
template <typename T>
ml::SVSoftmax<T> make_sv(FuzzedDataProvider& in) {
  ml::SVSoftmax<T> p;
  p.s = hyper<T>(in, 30, "s");
  p.m = hyper<T>(in, 0.35, "m");
  p.t = hyper<T>(in, 1.2, "t");
  p.target = target_of(in.ConsumeIntegral<std::uint8_t>());
  note(" target=%d", int(p.target));
  fallback_and_gradient(p, in);
  return p;
}
template <typename T>
ml::MVSoftmax<T> make_mv(FuzzedDataProvider& in) {
  ml::MVSoftmax<T> p;
  p.s = hyper<T>(in, 32, "s");
  p.m = hyper<T>(in, 0.35, "m");
  p.t = hyper<T>(in, 1.2, "t");
  p.target = target_of(in.ConsumeIntegral<std::uint8_t>());
  p.variant = enum_or_invalid<ml::MVVariant>(in.ConsumeIntegral<std::uint8_t>());
  p.conditional_margin = in.ConsumeBool();
  note(" target=%d variant=%d conditional=%d", int(p.target), int(p.variant), int(p.conditional_margin));
  fallback_and_gradient(p, in);
  return p;
}
template <typename T>
ml::CurricularFace<T> make_curricular(FuzzedDataProvider& in) {
  ml::CurricularFace<T> p;
  p.s = hyper<T>(in, 64, "s");
  p.m = hyper<T>(in, 0.5, "m");
  p.tau = hyper<T>(in, 0.3, "tau");
  p.momentum = hyper<T>(in, 0.99, "momentum");
  fallback_and_gradient(p, in);
  // tau updated by each forward for about a third of the inputs (stateful_dense_calls,
  // stateful_cosine_calls); otherwise fixed, so that the entry points can be compared with each
  // other on one policy.
  p.update_tau_in_forward = in.ConsumeIntegral<std::uint8_t>() >= 170;
  note(" update_tau_in_forward=%d", int(p.update_tau_in_forward));
  return p;
}
template <typename T>
ml::AMMSoftmax<T> make_amm(FuzzedDataProvider& in) {
  ml::AMMSoftmax<T> p;
  p.s = hyper<T>(in, 64, "s");
  p.m = hyper<T>(in, 0.5, "m");
  p.m_h = hyper<T>(in, 0.1, "m_h");
  fallback_and_gradient(p, in);
  return p;
}

template <typename T>
void run(FuzzedDataProvider& in, unsigned which, bool cosine_level) {
  switch (which) {
    case 0: {
      ml::NormFace<T> p;
      p.s = hyper<T>(in, 20, "s");
      run_policy(p, in, cosine_level);
      break;
    }
    case 1: run_policy(make_cosface<T>(in), in, cosine_level); break;
    case 2: run_policy(make_arcface<T>(in), in, cosine_level); break;
    case 3: {
      ml::CombinedMargin<T> p;
      p.s = hyper<T>(in, 64, "s");
      p.m1 = hyper<T>(in, 1.0, "m1");
      p.m2 = hyper<T>(in, 0.3, "m2");
      p.m3 = hyper<T>(in, 0.2, "m3");
      fallback_and_gradient(p, in);
      run_policy(p, in, cosine_level);
      break;
    }
    case 4:
    case 5: {
      ml::SphereFace<T> p;
      const auto mk = in.ConsumeIntegral<std::uint8_t>();
      p.m = mk < 200 ? 1 + mk % 5 : in.ConsumeIntegral<int>();  // raw ints: 0, negative, huge
      p.lambda = hyper<T>(in, 5.0, "lambda");
      p.scale_mode = which == 4 ? ml::Scale::feature_norm : ml::Scale::fixed;
      note(" m=%d scale_mode=%d", p.m, int(p.scale_mode));
      p.s = hyper<T>(in, 30, "s");
      run_policy(p, in, cosine_level);
      break;
    }
    case 6: run_policy(make_sv<T>(in), in, cosine_level); break;
    case 7: run_policy(make_mv<T>(in), in, cosine_level); break;
    case 8: run_policy(make_curricular<T>(in), in, cosine_level); break;
    case 9: run_policy(make_amm<T>(in), in, cosine_level); break;
    case 10: {
      ml::AdaptiveMargin<T> p;
      p.s = hyper<T>(in, 30, "s");
      p.lambda_m = hyper<T>(in, 70, "lambda_m");
      p.scope = enum_or_invalid<ml::RegulariserScope>(in.ConsumeIntegral<std::uint8_t>());
      note(" scope=%d", int(p.scope));
      run_policy(p, in, cosine_level);  // margins: set once C is known
      break;
    }
    default: {  // ml::class_margins over each policy with a margin member
      const auto base = in.ConsumeIntegral<std::uint8_t>() % 6;
      const char* bases[] = {"CosFace", "ArcFace", "SVSoftmax", "MVSoftmax", "CurricularFace", "AMMSoftmax"};
      note(" base=%s", bases[base]);
      switch (base) {
        case 0: run_policy(ml::class_margins(make_cosface<T>(in), {}), in, cosine_level); break;
        case 1: run_policy(ml::class_margins(make_arcface<T>(in), {}), in, cosine_level); break;
        case 2: run_policy(ml::class_margins(make_sv<T>(in), {}), in, cosine_level); break;
        case 3: run_policy(ml::class_margins(make_mv<T>(in), {}), in, cosine_level); break;
        case 4: run_policy(ml::class_margins(make_curricular<T>(in), {}), in, cosine_level); break;
        default: run_policy(ml::class_margins(make_amm<T>(in), {}), in, cosine_level); break;
      }
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* allow = std::getenv("MARGINLOSS_FUZZ_ALLOW_OVERFLOW");
  g_allow_overflow = allow && std::strcmp(allow, "1") == 0;
  if (g_allow_overflow)
    std::fprintf(stderr,
                 "MARGINLOSS_FUZZ_ALLOW_OVERFLOW=1: non-finite results are tolerated for inputs whose exact "
                 "results overflow the scalar type\n");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const auto head = in.ConsumeIntegral<std::uint8_t>();
  constexpr unsigned policies = 12;
  const unsigned policy = head % policies;
  const bool use_double = (head / policies) % 2;
  const bool cosine_level = (head / (2 * policies)) % 4 == 0;  // about a quarter of the inputs
  const char* names[policies] = {"NormFace",  "CosFace",   "ArcFace",        "CombinedMargin",
                                 "SphereFace", "SphereFace", "SVSoftmax",      "MVSoftmax",
                                 "CurricularFace", "AMMSoftmax", "AdaptiveMargin", "ClassMargins"};
  g_desc.clear();
  g_dump = nullptr;
  g_dump_margins = nullptr;
  margin_store<float>().clear();
  margin_store<double>().clear();
  g_overflow_expected = false;
  note("%s<%s>%s", names[policy], use_double ? "double" : "float", cosine_level ? " cosine-level" : "");
  if (use_double)
    run<double>(in, policy, cosine_level);
  else
    run<float>(in, policy, cosine_level);
  return 0;
}
