// Checks marginloss_torch::margin_loss against a pure-libtorch implementation of the same loss
// (normalise, cos, margin, cross_entropy, differentiated by torch autograd), in double:
// the loss and the gradients reaching x, w and a layer before x agree to 1e-10. Float runs
// are compared with the double reference, and bad inputs must throw. Exits non-zero on failure.
#include "marginloss_torch.hpp"

#include <cmath>
#include <cstdio>
#include <string>

namespace ml = marginloss;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("  %-66s %s\n", what.c_str(), ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

enum class Kind { cosface, arcface };

// The loss written with libtorch operations only; autograd differentiates it.
torch::Tensor reference_loss(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& labels, Kind kind,
                             double s, double m) {
  const torch::Tensor xn = x / x.norm(2, {1}, true);
  const torch::Tensor wn = w / w.norm(2, {1}, true);
  const torch::Tensor cos = xn.mm(wn.t()).clamp(-1.0, 1.0);
  const torch::Tensor t = cos.gather(1, labels.unsqueeze(1)).squeeze(1);
  torch::Tensor target;
  if (kind == Kind::cosface) {
    target = t - m;
  } else {
    // ArcFace with the hard-threshold fallback (marginloss's default): cos(theta + m) where
    // theta + m <= pi, t - m sin m beyond.
    const torch::Tensor margined = torch::cos(torch::acos(t) + m);
    target = torch::where(t > std::cos(M_PI - m), margined, t - m * std::sin(m));
  }
  const torch::Tensor one_hot = torch::one_hot(labels, w.size(0)).to(x.scalar_type());
  const torch::Tensor logits = s * (cos + one_hot * (target - t).unsqueeze(1));
  return torch::nn::functional::cross_entropy(logits, labels);
}

struct Grads {
  torch::Tensor loss, dx, dw, dE;
};

// inputs A (B x K) -> x = A E (B x D) -> loss(x, w); total = 0.37 loss, backward.
template <typename F>
Grads run(const torch::Tensor& A0, const torch::Tensor& E0, const torch::Tensor& w0, F loss_fn) {
  torch::Tensor E = E0.clone().requires_grad_(true);
  torch::Tensor w = w0.clone().requires_grad_(true);
  torch::Tensor x = A0.mm(E);
  x.retain_grad();
  torch::Tensor loss = loss_fn(x, w);
  (0.37 * loss).backward();
  return {loss.detach(), x.grad(), w.grad(), E.grad()};
}

template <typename Policy>
void compare(const char* name, const Policy& policy, Kind kind, double s, double m, torch::ScalarType dtype,
             double tol) {
  torch::manual_seed(3);
  const int64_t B = 24, K = 12, D = 8, C = 10;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor A = torch::randn({B, K}, opts), E = torch::randn({K, D}, opts), w = torch::randn({C, D}, opts);
  const torch::Tensor labels = torch::arange(B, torch::kInt64).remainder(C);
  // A few samples opposite their class (target cosine near -1), to cover ArcFace's fallback
  // branch: x_i = A_i E = -w_{y_i} + noise, with A_i = (-w_{y_i} + noise) pinv(E).
  const torch::Tensor targets = -w.index_select(0, labels.slice(0, 0, 4)) + 0.05 * torch::randn({4, D}, opts);
  A.slice(0, 0, 4).copy_(targets.mm(torch::pinverse(E)));

  const Grads ref = run(A, E, w, [&](const torch::Tensor& x, const torch::Tensor& ww) {
    return reference_loss(x, ww, labels, kind, s, m);
  });
  const Grads got = run(A.to(dtype), E.to(dtype), w.to(dtype), [&](const torch::Tensor& x, const torch::Tensor& ww) {
    return marginloss_torch::margin_loss(x, ww, labels, policy);
  });
  const double scale_x = ref.dx.abs().max().item<double>(), scale_w = ref.dw.abs().max().item<double>(),
               scale_e = ref.dE.abs().max().item<double>();
  const double e_loss = max_abs_diff(got.loss, ref.loss), e_x = max_abs_diff(got.dx, ref.dx),
               e_w = max_abs_diff(got.dw, ref.dw), e_e = max_abs_diff(got.dE, ref.dE);
  char line[256];
  std::snprintf(line, sizeof line, "%s %s: loss %.3g, |d| loss %.1e dX %.1e dW %.1e dE %.1e (tol %.0e)", name,
                dtype == torch::kFloat64 ? "double" : "float", ref.loss.item<double>(), e_loss, e_x, e_w, e_e, tol);
  const bool relative = dtype != torch::kFloat64;  // float: relative to the largest entry
  expect(e_loss <= tol * (relative ? std::fabs(ref.loss.item<double>()) : 1.0) &&
             e_x <= tol * (relative ? scale_x : 1.0) && e_w <= tol * (relative ? scale_w : 1.0) &&
             e_e <= tol * (relative ? scale_e : 1.0),
         line);
}

template <typename F>
void expect_throw(const char* what, F f) {
  bool threw = false;
  std::string message;
  try {
    f();
  } catch (const std::exception& e) {
    threw = true;
    message = e.what();
  }
  const auto newline = message.find('\n');
  expect(threw, std::string(what) + (threw ? " -> " + message.substr(0, std::min<size_t>(newline, 40)) : ""));
}

}  // namespace

int main() {
  torch::set_num_threads(1);
  std::printf("marginloss_torch::margin_loss against pure libtorch (autograd through the Function)\n");
  compare("ArcFace s=64 m=0.5", ml::ArcFace<double>{64.0, 0.5}, Kind::arcface, 64.0, 0.5, torch::kFloat64, 1e-10);
  compare("ArcFace s=30 m=0.3", ml::ArcFace<double>{30.0, 0.3}, Kind::arcface, 30.0, 0.3, torch::kFloat64, 1e-10);
  compare("CosFace s=64 m=0.35", ml::CosFace<double>{64.0, 0.35}, Kind::cosface, 64.0, 0.35, torch::kFloat64, 1e-10);
  compare("CosFace s=30 m=0.4", ml::CosFace<double>{30.0, 0.4}, Kind::cosface, 30.0, 0.4, torch::kFloat64, 1e-10);
  compare("ArcFace s=64 m=0.5", ml::ArcFace<float>{64.f, 0.5f}, Kind::arcface, 64.0, 0.5, torch::kFloat32, 1e-4);
  compare("CosFace s=64 m=0.35", ml::CosFace<float>{64.f, 0.35f}, Kind::cosface, 64.0, 0.35, torch::kFloat32, 1e-4);

  std::printf("bad inputs throw\n");
  const auto d = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor x = torch::randn({4, 3}, d), w = torch::randn({5, 3}, d);
  const torch::Tensor labels = torch::tensor({0, 1, 2, 3}, torch::kInt64);
  const ml::ArcFace<double> arc{64.0, 0.5};
  expect_throw("label out of range", [&] {
    marginloss_torch::margin_loss(x, w, torch::tensor({0, 1, 2, 5}, torch::kInt64), arc);
  });
  expect_throw("float tensor with a double policy", [&] {
    marginloss_torch::margin_loss(x.to(torch::kFloat32), w.to(torch::kFloat32), labels, arc);
  });
  expect_throw("x on the meta device", [&] { marginloss_torch::margin_loss(x.to(torch::kMeta), w, labels, arc); });
  expect_throw("2-D labels", [&] { marginloss_torch::margin_loss(x, w, labels.view({2, 2}), arc); });
  expect_throw("zero row in x", [&] {
    marginloss_torch::margin_loss(torch::cat({x.slice(0, 0, 3), torch::zeros({1, 3}, d)}), w, labels, arc);
  });

  std::printf("accepted as they are, or copied once\n");
  const double base = marginloss_torch::margin_loss(x, w, labels, arc).item<double>();
  expect(marginloss_torch::margin_loss(x, w, labels.to(torch::kInt32), arc).item<double>() == base,
         "int32 labels: the same loss as int64");
  expect(marginloss_torch::margin_loss(x.t().contiguous().t(), w.t().contiguous().t(), labels, arc).item<double>() ==
             base,
         "non-contiguous x and w (copied): the same loss");

  std::printf("%s\n", failures ? "FAILED" : "all checks passed");
  return failures ? 1 : 0;
}
