// libFuzzer harness for every public entry point of marginloss.
//
// The input bytes choose a policy (NormFace, CosFace incl. the conditional margin, ArcFace,
// CombinedMargin, SphereFace with either scale mode), the scalar type (float or double), an
// entry point, the shapes (B, D, C up to 16, zero included), the labels (valid, out of range,
// and of several integer types), the hyper-parameters (typical values, edge values and raw
// bit patterns: NaN, +-Inf, denormals, huge and tiny), the enums (including values outside
// the enumerators) and every matrix entry (scaled rows with norms from 2^-1100 to 2^1100,
// exact copies of class weights for cosines of exactly +-1, raw bit patterns).
//
// The oracle: every call either returns finite results (loss, dX, dW, dcos, dscales) or throws
// marginloss::invalid_argument. Anything else - another exception, a non-finite value, a
// sanitizer report, a write outside the output views (checked with NaN guard columns around
// strided outputs), a read outside the input views (guard columns of NaN around strided inputs
// would make the result non-finite) - is a finding and aborts.
//
// Build and run: tests/hardening/run_fuzz.sh [seconds].
#include <marginloss/marginloss.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace ml = marginloss;
using ml::Index;

namespace {

template <typename T>
using Mat = ml::RowMatrix<T>;
template <typename T>
using StridedMap = Eigen::Map<Mat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

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
//   F          max |f(t)| and |c| over t in [-1, 1] (every fallback)
//   slope      max |f'(t)| sin(theta)-weighted, i.e. what reaches dX and dW (m1 for angular margins)
//   slope_raw  max |f'(t)| as the library returns it in dcos (sin(theta) floored)
struct Envelope {
  double F = 1, slope = 1, slope_raw = 1;
};
template <typename T>
double sine_floor() {
  return sizeof(T) == 4 ? 1e-6 : 1e-12;
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
  return {2 + std::fabs(double(p.m)), 1, 1 + 1 / sine_floor<T>()};
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

// Runs `body` and accepts only a normal return or marginloss::invalid_argument.
template <typename F>
void guarded_call(F&& body) {
  try {
    body();
  } catch (const ml::invalid_argument& e) {
    if (std::strncmp(e.what(), "marginloss:", 11) != 0) finding("invalid_argument message does not start with 'marginloss:'");
  }
  // Any other exception escapes and terminates: libFuzzer reports it.
}

// ------------------------------------------------------------------------------------------
// Dense entry points.

template <typename P, typename Labels>
void dense_calls(const P& policy, FuzzedDataProvider& in, Index B, Index D, Index C, const Labels& labels) {
  using T = typename P::value_type;
  const auto mode = in.ConsumeIntegral<std::uint8_t>();
  const Index pad = 1 + (mode >> 6);

  // W first, so rows of X can be exact multiples of their class weight (cosine exactly +-1).
  Guarded<T> Wg(C, D, pad), Xg(B, D, pad);
  auto W = Wg.view();
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
  const auto entry_point = mode % 4;
  {
    const Envelope e = envelope_of(policy);
    double x_min = std::numeric_limits<double>::infinity(), x_max = 0, w_min = x_min;
    for (Index i = 0; i < B; ++i) x_min = std::min(x_min, norm_of_row(X, i)), x_max = std::max(x_max, norm_of_row(X, i));
    for (Index j = 0; j < C; ++j) w_min = std::min(w_min, norm_of_row(W, j));
    const double S = policy.scale_is_feature_norm() ? x_max : std::fabs(static_cast<double>(policy.scale(T(1))));
    const double g = entry_point >= 2 ? std::fabs(static_cast<double>(grad_loss)) : 1.0;
    const double inv = std::max({1.0, 1 / x_min, 1 / w_min});
    g_overflow_expected =
        beyond_range<T>(S * e.F, 4 * g * S * e.slope * inv * static_cast<double>(std::max<Index>({B, C, 1})));
  }
  const char* names[] = {"allocating forward_backward + workspace form", "workspace forward_backward",
                         "forward + allocating backward", "forward + backward into views"};
  note(" entry=%s pad=%ld", names[entry_point], static_cast<long>(pad));
  g_dump = [&] {
    dump_matrix("X", X);
    dump_matrix("W", W);
    dump_labels(labels);
  };

  if (entry_point == 0) {  // allocating forward_backward
    guarded_call([&] {
      const auto r = ml::forward_backward(policy, X, W, labels);
      if (!check_loss(r.loss, "loss (allocating forward_backward)")) return;
      if (!check_matrix(r.dX, "dX (allocating forward_backward)")) return;
      if (!check_matrix(r.dW, "dW (allocating forward_backward)")) return;
      // The workspace form into strided outputs, on a workspace that held a larger problem
      // first, gives the same values and writes nothing outside the views.
      ml::Workspace<T> ws;
      ws.reserve(B + 3, D + 2, C + 5);
      Guarded<T> dXg(B, D, pad), dWg(C, D, pad);
      const T loss = ml::forward_backward(policy, X, W, labels, dXg.view(), dWg.view(), ws);
      if (!dXg.guards_intact() || !dWg.guards_intact()) finding("forward_backward wrote outside dX/dW");
      if (!(loss == r.loss) || !same_values(dXg.view(), r.dX) || !same_values(dWg.view(), r.dW))
        finding("workspace form differs from the allocating form");
    });
  } else if (entry_point == 1) {  // workspace forward_backward, possibly with wrong output shapes
    guarded_call([&] {
      const Index bx = (mode & 16) ? B + 1 : B, cw = (mode & 32) ? std::max<Index>(C - 1, 0) : C;
      Guarded<T> dXg(bx, D, pad), dWg(cw, D, pad);
      ml::Workspace<T> ws;
      const T loss = ml::forward_backward(policy, X, W, labels, dXg.view(), dWg.view(), ws);
      if (!dXg.guards_intact() || !dWg.guards_intact()) finding("forward_backward wrote outside dX/dW");
      if (bx != B || cw != C) finding("forward_backward accepted wrongly shaped outputs");
      if (!check_loss(loss, "loss (workspace forward_backward)")) return;
      if (!check_matrix(dXg.view(), "dX (workspace forward_backward)")) return;
      if (!check_matrix(dWg.view(), "dW (workspace forward_backward)")) return;
      if (ws.holds_forward()) finding("workspace still holds a forward after forward_backward");
    });
  } else {  // split forward + backward with an arbitrary upstream gradient
    ml::Workspace<T> ws;
    bool tolerated = false;
    guarded_call([&] {
      const T loss = ml::forward(policy, X, W, labels, ws);
      if (!check_loss(loss, "loss (forward)")) {
        tolerated = true;
        return;
      }
      if (!ws.holds_forward()) finding("forward() returned but the workspace holds no forward");
      if (entry_point == 2) {
        const auto g = ml::backward(policy, W, ws, grad_loss);
        if (!check_matrix(g.dX, "dX (backward)")) return;
        if (!check_matrix(g.dW, "dW (backward)")) return;
      } else {
        Guarded<T> dXg(B, D, pad), dWg(C, D, pad);
        ml::backward(policy, W, ws, grad_loss, dXg.view(), dWg.view());
        if (!dXg.guards_intact() || !dWg.guards_intact()) finding("backward wrote outside dX/dW");
        if (!check_matrix(dXg.view(), "dX (backward)")) return;
        if (!check_matrix(dWg.view(), "dW (backward)")) return;
      }
    });
    // A forward is consumed by one backward: a second one (or one after a failed forward) throws.
    if (tolerated) return;
    bool threw = false;
    try {
      (void)ml::backward(policy, W, ws, T(1));
    } catch (const ml::invalid_argument&) {
      threw = true;
    }
    if (!threw) finding("a second backward() without forward() did not throw");
  }
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
  };
  guarded_call([&] {
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
}

template <typename P>
void run_policy(const P& policy, FuzzedDataProvider& in, bool cosine_level) {
  const Index B = in.ConsumeIntegralInRange<Index>(0, 16);
  const Index D = in.ConsumeIntegralInRange<Index>(0, 16);
  const Index C = in.ConsumeIntegralInRange<Index>(0, 16);
  note(" B=%ld D=%ld C=%ld", static_cast<long>(B), static_cast<long>(D), static_cast<long>(C));
  const auto kind = static_cast<LabelKind>(in.ConsumeIntegralInRange<int>(0, 2));
  note(" labels=%s", kind == LabelKind::int32 ? "int32" : (kind == LabelKind::int64 ? "int64" : "uint64"));
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(B));
  for (auto& r : raw) r = in.ConsumeIntegral<std::uint8_t>();
  auto go = [&](const auto& labels) {
    if (cosine_level)
      cosine_calls(policy, in, B, C, labels);
    else
      dense_calls(policy, in, B, D, C, labels);
  };
  switch (kind) {
    case LabelKind::int32: go(make_labels<int>(raw, B, C)); break;
    case LabelKind::int64: go(make_labels<std::int64_t>(raw, B, C)); break;
    case LabelKind::uint64: go(make_labels<std::uint64_t>(raw, B, C)); break;
  }
}

ml::Fallback fallback_of(std::uint8_t k) { return static_cast<ml::Fallback>(k % 4); }  // 3: not an enumerator
ml::Gradient gradient_of(std::uint8_t k) { return static_cast<ml::Gradient>(k % 3); }  // 2: not an enumerator

template <typename T>
void run(FuzzedDataProvider& in, unsigned which, bool cosine_level) {
  switch (which) {
    case 0: {
      ml::NormFace<T> p;
      p.s = hyper<T>(in, 20, "s");
      run_policy(p, in, cosine_level);
      break;
    }
    case 1: {
      ml::CosFace<T> p;
      p.s = hyper<T>(in, 64, "s");
      p.m = hyper<T>(in, 0.35, "m");
      p.conditional_margin = in.ConsumeBool();
      note(" conditional=%d", int(p.conditional_margin));
      run_policy(p, in, cosine_level);
      break;
    }
    case 2: {
      ml::ArcFace<T> p;
      p.s = hyper<T>(in, 64, "s");
      p.m = hyper<T>(in, 0.5, "m");
      p.fallback = fallback_of(in.ConsumeIntegral<std::uint8_t>());
      p.gradient = gradient_of(in.ConsumeIntegral<std::uint8_t>());
      note(" fallback=%d gradient=%d", int(p.fallback), int(p.gradient));
      run_policy(p, in, cosine_level);
      break;
    }
    case 3: {
      ml::CombinedMargin<T> p;
      p.s = hyper<T>(in, 64, "s");
      p.m1 = hyper<T>(in, 1.0, "m1");
      p.m2 = hyper<T>(in, 0.3, "m2");
      p.m3 = hyper<T>(in, 0.2, "m3");
      p.fallback = fallback_of(in.ConsumeIntegral<std::uint8_t>());
      p.gradient = gradient_of(in.ConsumeIntegral<std::uint8_t>());
      note(" fallback=%d gradient=%d", int(p.fallback), int(p.gradient));
      run_policy(p, in, cosine_level);
      break;
    }
    default: {
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
  const unsigned policy = head % 6;          // NormFace, CosFace, ArcFace, Combined, SphereFace x2
  const bool use_double = (head / 6) % 2;
  const bool cosine_level = (head / 12) % 4 == 0;  // a quarter of the inputs
  const char* policies[] = {"NormFace", "CosFace", "ArcFace", "CombinedMargin", "SphereFace", "SphereFace"};
  g_desc.clear();
  g_dump = nullptr;
  g_overflow_expected = false;
  note("%s<%s>%s", policies[policy], use_double ? "double" : "float", cosine_level ? " cosine-level" : "");
  if (use_double)
    run<double>(in, policy, cosine_level);
  else
    run<float>(in, policy, cosine_level);
  return 0;
}
