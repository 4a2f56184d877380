"""Every functional form of marginloss against the pure-PyTorch reference (reference.py): loss and
gradients with respect to the embeddings, the class weights (and the margins of adaptive_margin)
in float64, to 1e-10; then float32, int32 labels, non-contiguous inputs, a layer before the
embeddings, and the margins of class_margins taking no gradient.

    PYTHONPATH=<dir holding the built marginloss package> /usr/bin/python3 -m unittest -v test_functional
"""
import math
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

import marginloss  # noqa: E402
import marginloss.functional as MF  # noqa: E402

TOL = 1e-10
B, D, C = 24, 16, 40


def make_inputs(seed=0, dtype=torch.float64, opposite=4, near=3):
    """Random inputs; the first `opposite` samples point away from their class (target cosine
    near -1: the fallback branches), the next `near` close to it (target cosine near +1, large
    ArcFace slopes). Labels cover classes 0..B-1 plus repeats."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64) * (0.5 + 2 * torch.rand(B, 1, generator=g,
                                                                                   dtype=torch.float64))
    w = torch.randn(C, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (B,), generator=g)
    y[: B // 2] = torch.arange(B // 2) * 3 % C  # distinct classes for the constructed samples
    noise = torch.randn(B, D, generator=g, dtype=torch.float64)
    x[:opposite] = -w[y[:opposite]] + 0.15 * noise[:opposite]
    x[opposite:opposite + near] = w[y[opposite:opposite + near]] + 0.1 * noise[opposite:opposite + near]
    return x.to(dtype), w.to(dtype), y


def grads(fn, x0, w0, y, margins0=None):
    """Loss and gradients of 0.37 * fn(x, w, y[, margins]) (a non-unit upstream gradient)."""
    x = x0.clone().requires_grad_(True)
    w = w0.clone().requires_grad_(True)
    args = [x, w, y]
    m = None
    if margins0 is not None:
        m = margins0.clone().requires_grad_(True)
        args.append(m)
    loss = fn(*args)
    (0.37 * loss).backward()
    out = [loss.detach(), x.grad, w.grad]
    if m is not None:
        out.append(m.grad)
    return out


def max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a, b))


# Each case: (name, keyword parameters). Every option of every policy is covered at least once.
CASES = {
    "normface": [{}, dict(s=30.0)],
    "cosface": [{}, dict(s=30.0, m=0.4), dict(m=0.35, conditional_margin=True)],
    "arcface": [{}, dict(fallback="easy_margin"), dict(fallback="none"), dict(gradient="straight_through"),
                dict(s=30.0, m=0.3, fallback="none", gradient="straight_through")],
    "combined_margin": [{}, dict(m1=1.0, m2=0.5, m3=0.0, fallback="hard_threshold"),
                        dict(m1=0.9, m2=0.4, m3=0.15, fallback="hard_threshold"),
                        dict(m1=1.2, m2=0.2, m3=0.1, fallback="easy_margin"),
                        dict(m1=1.1, m2=0.3, m3=0.2, gradient="straight_through")],
    "sphereface": [{}, dict(m=4, lambda_=0.0), dict(m=2, lambda_=10.0), dict(m=3), dict(m=1), dict(m=5),
                   dict(m=4, scale_mode="fixed", s=30.0)],
    "sv_softmax": [{}, dict(m=0.35, t=1.3), dict(m=0.5, target="additive_angular", fallback="hard_threshold"),
                   dict(m=0.3, target="additive_angular", fallback="none", gradient="straight_through"),
                   dict(m=0.35, fallback="easy_margin")],
    "mv_softmax": [{}, dict(variant="fixed", t=1.12), dict(target="additive_angular", m=0.5,
                                                            fallback="hard_threshold"),
                   dict(target="additive_angular", m=0.5, fallback="easy_margin", variant="fixed"),
                   dict(fallback="easy_margin"), dict(conditional_margin=True),
                   dict(target="additive_angular", m=0.4, gradient="straight_through")],
    "curricular_face": [{}, dict(tau=0.3), dict(tau=-0.2, m=0.4, fallback="easy_margin"),
                        dict(tau=0.1, gradient="straight_through", fallback="none")],
    "amm_softmax": [{}, dict(m_h=0.3), dict(m=0.3, m_h=0.05, fallback="none"),
                    dict(gradient="straight_through", fallback="easy_margin")],
}


class FunctionalAgainstPyTorch(unittest.TestCase):
    def check(self, name, params, seed=0):
        x, w, y = make_inputs(seed)
        ours = grads(lambda a, b, c: getattr(MF, name)(a, b, c, **params), x, w, y)
        ref = grads(lambda a, b, c: getattr(R, name)(a, b, c, **params), x, w, y)
        err = max_diff(ours, ref)
        self.assertTrue(torch.isfinite(ref[0]).item())
        self.assertLessEqual(err, TOL, "%s %s: max |difference| %.3g" % (name, params, err))
        return err

    def test_every_policy_double(self):
        for name, cases in CASES.items():
            for params in cases:
                with self.subTest(policy=name, params=params):
                    err = self.check(name, params)
                    print("  %-16s %-70s max |d| %.1e" % (name, params, err))

    def test_sphereface_lambda_keyword(self):
        x, w, y = make_inputs(1)
        a = MF.sphereface(x, w, y, **{"lambda": 7.0})
        b = R.sphereface(x, w, y, lambda_=7.0)
        self.assertLessEqual(abs(a.item() - b.item()), TOL)

    def test_adaptive_margin(self):
        x, w, y = make_inputs(2)
        g = torch.Generator().manual_seed(5)
        margins = 0.3 + 0.1 * torch.rand(C, generator=g, dtype=torch.float64)
        margins[y[0]] = 0.0
        margins[y[1]] = 1.0
        for params in ({}, dict(s=32.0, lambda_m=10.0), dict(scope="batch_classes"),
                       dict(scope="batch_classes", lambda_m=0.0, s=20.0)):
            with self.subTest(params=params):
                ours = grads(lambda a, b, c, m: MF.adaptive_margin(a, b, c, m, **params), x, w, y, margins)
                ref = grads(lambda a, b, c, m: R.adaptive_margin(a, b, c, m, **params), x, w, y, margins)
                err = max_diff(ours, ref)
                print("  %-16s %-70s max |d| %.1e (loss, dX, dW, dmargins)" % ("adaptive_margin", params, err))
                self.assertLessEqual(err, TOL)

    def test_class_margins(self):
        x, w, y = make_inputs(3)
        margins = MF.margins_from_class_counts(torch.arange(1, C + 1) ** 2, 0.5)
        cases = [("cosface", {}), ("cosface", dict(conditional_margin=True, s=30.0)),
                 ("arcface", {}), ("arcface", dict(fallback="none", gradient="straight_through")),
                 ("sv_softmax", dict(t=1.3)), ("sv_softmax", dict(target="additive_angular",
                                                                  fallback="hard_threshold")),
                 ("mv_softmax", {}), ("mv_softmax", dict(target="additive_angular", fallback="easy_margin",
                                                         variant="fixed")),
                 ("curricular_face", dict(tau=0.2)), ("amm_softmax", dict(m_h=0.2))]
        for base, params in cases:
            with self.subTest(base=base, params=params):
                m = margins.clone().requires_grad_(True)
                ours = grads(lambda a, b, c: MF.class_margins(a, b, c, m, base=base, **params), x, w, y)
                ref = grads(lambda a, b, c: R.class_margins(a, b, c, margins, base=base, **params), x, w, y)
                err = max_diff(ours, ref)
                print("  %-16s %-70s max |d| %.1e" % ("class_margins", dict(base=base, **params), err))
                self.assertLessEqual(err, TOL)
                self.assertIsNone(m.grad)  # fixed margins: no gradient
        # Constant margins equal to m reproduce the plain policy.
        const = torch.full((C,), 0.35, dtype=torch.float64)
        self.assertLessEqual(abs(MF.class_margins(x, w, y, const, base="cosface").item()
                                 - MF.cosface(x, w, y, m=0.35).item()), 1e-12)

    def test_margins_tensor_is_viewed_not_copied(self):
        """The C++ policy views the margins tensor's memory: a non-contiguous tensor gives the same
        results as a contiguous one, the call leaves the tensor's values alone, and changing it in
        place between the forward and the backward is autograd's in-place error, not a silent mix."""
        x, w, y = make_inputs(8)
        g = torch.Generator().manual_seed(9)
        margins = 0.3 + 0.1 * torch.rand(C, generator=g, dtype=torch.float64)
        strided0 = torch.stack([margins, torch.full((C,), float("nan"), dtype=torch.float64)], 1)
        for name, fn in (("adaptive_margin", lambda a, b, c, m: MF.adaptive_margin(a, b, c, m, lambda_m=5.0)),
                         ("class_margins", lambda a, b, c, m: MF.class_margins(a, b, c, m, base="arcface"))):
            with self.subTest(policy=name):
                base = grads(fn, x, w, y, margins)
                # Every other entry of a (C, 2) tensor whose other column is NaN.
                strided = strided0.clone()[:, 0]
                self.assertFalse(strided.is_contiguous())
                xs, ws, ms = x.clone().requires_grad_(True), w.clone().requires_grad_(True), \
                    strided.requires_grad_(True)
                loss = fn(xs, ws, y, ms)
                (0.37 * loss).backward()
                out = [loss.detach(), xs.grad, ws.grad] + ([ms.grad] if name == "adaptive_margin" else [])
                self.assertLessEqual(max_diff(out, base), 0.0)
                # The call did not write into the margins.
                xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
                m = margins.clone().requires_grad_(name == "adaptive_margin")
                before = m.detach().clone()
                loss = fn(xr, wr, y, m)
                self.assertTrue(torch.equal(m.detach(), before))
                # An in-place change before the backward is detected.
                with torch.no_grad():
                    m.add_(0.01)
                with self.assertRaisesRegex(RuntimeError, "modified by an inplace operation"):
                    loss.backward()
                # After the backward, a step in place is seen by the next forward.
                m = margins.clone().requires_grad_(name == "adaptive_margin")
                loss1 = fn(xr, wr, y, m)
                loss1.backward()
                with torch.no_grad():
                    m[y[0]] -= 0.2
                loss2 = fn(x, w, y, m)
                fresh = fn(x, w, y, m.detach().clone())
                self.assertNotEqual(loss2.item(), loss1.item())
                self.assertEqual(loss2.item(), fresh.item())

    def test_float32(self):
        x, w, y = make_inputs(4)
        for name in CASES:
            with self.subTest(policy=name):
                ours = grads(getattr(MF, name), x.float(), w.float(), y)
                ref = grads(getattr(R, name), x, w, y)
                for a, b in zip(ours, ref):
                    self.assertEqual(a.dtype, torch.float32)
                    scale = b.abs().max().item()
                    self.assertLessEqual((a.double() - b).abs().max().item(), 2e-4 * max(scale, 1.0), name)

    def test_int32_labels_and_non_contiguous(self):
        x, w, y = make_inputs(5)
        base = grads(MF.arcface, x, w, y)
        self.assertLessEqual(max_diff(grads(MF.arcface, x, w, y.to(torch.int32)), base), 0.0)
        xt = x.t().contiguous().t()  # same values, column-major
        wt = w.t().contiguous().t()
        self.assertFalse(xt.is_contiguous() or wt.is_contiguous())
        self.assertLessEqual(max_diff(grads(MF.arcface, xt, wt, y), base), 0.0)
        y_strided = torch.stack([y, y], 1)[:, 0]
        self.assertFalse(y_strided.is_contiguous())
        self.assertLessEqual(max_diff(grads(MF.arcface, x, w, y_strided), base), 0.0)

    def test_gradient_reaches_a_layer_before(self):
        x, w, y = make_inputs(6)
        A = torch.randn(B, 8, dtype=torch.float64)
        E0 = torch.linalg.lstsq(A, x).solution

        def run(fn):
            E = E0.clone().requires_grad_(True)
            w1 = w.clone().requires_grad_(True)
            loss = fn(A @ E, w1, y)
            loss.backward()
            return [loss.detach(), E.grad, w1.grad]

        self.assertLessEqual(max_diff(run(MF.curricular_face), run(R.curricular_face)), TOL)

    def test_target_cosines_and_helpers(self):
        x, w, y = make_inputs(7)
        self.assertLessEqual((MF.target_cosines(x, w, y) - R.target_cosines(x, w, y)).abs().max().item(), 1e-14)
        self.assertEqual(MF.mv_t_from_increment(0.2), 1.2)
        m = torch.tensor([-0.5, 0.5, 1.5], dtype=torch.float64)
        MF.project_margins(m)
        self.assertEqual(m.tolist(), [0.0, 0.5, 1.0])
        lm = MF.margins_from_class_counts([1, 16, 81], 0.8)
        self.assertTrue(torch.allclose(lm, torch.tensor([0.8, 0.4, 0.8 / 3], dtype=torch.float64)))

    def test_build_info(self):
        info = marginloss.build_info()
        print("  build:", info)
        self.assertIn("simd", info)
        self.assertIn(info["products"], ("oneDNN", "Eigen", "BLAS"))

    def test_every_name_exists(self):
        for name in ("normface", "cosface", "arcface", "combined_margin", "sphereface", "sv_softmax", "mv_softmax",
                     "curricular_face", "amm_softmax", "adaptive_margin", "class_margins"):
            self.assertTrue(callable(getattr(marginloss.functional, name)), name)


if __name__ == "__main__":
    torch.set_num_threads(1)
    unittest.main(verbosity=2)
