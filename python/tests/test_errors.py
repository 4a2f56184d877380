"""Bad input raises a Python exception with a message naming the problem: TypeError for types and
dtypes, ValueError for shapes, devices, values and parameters (the C++ library's messages),
NotImplementedError for CUDA tensors; and nothing is left half-updated (CurricularFace's tau).
"""
import unittest

import torch

import marginloss
import marginloss.functional as MF

B, D, C = 6, 5, 7


def inputs(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.randn(B, D, dtype=dtype), torch.randn(C, D, dtype=dtype), torch.arange(B) % C


class BadInput(unittest.TestCase):
    def raises(self, exc, pattern, fn, *args, **kwargs):
        with self.assertRaisesRegex(exc, pattern) as ctx:
            fn(*args, **kwargs)
        print("  %-18s %s" % (exc.__name__, str(ctx.exception).splitlines()[0][:110]))

    def test_types_and_dtypes(self):
        x, w, y = inputs()
        self.raises(TypeError, "embeddings must be a torch.Tensor", MF.arcface, x.numpy(), w, y)
        self.raises(TypeError, "float32 or float64", MF.arcface, x.half(), w.half(), y)
        self.raises(TypeError, "weight is torch.float32 but embeddings is torch.float64", MF.arcface, x, w.float(), y)
        self.raises(TypeError, "labels must be int64 or int32", MF.cosface, x, w, y.to(torch.int16))
        self.raises(TypeError, "labels must be int64 or int32", MF.cosface, x, w, y.double())
        self.raises(TypeError, "margins is torch.float32", MF.adaptive_margin, x, w, y, torch.zeros(C))
        self.raises(TypeError, "must be a real number", MF.arcface, x, w, y, s="big")

    def test_shapes(self):
        x, w, y = inputs()
        self.raises(ValueError, "embeddings must be 2-D", MF.normface, x[None], w, y)
        self.raises(ValueError, "weight must be 2-D", MF.normface, x, w[0], y)
        self.raises(ValueError, "labels must be 1-D", MF.normface, x, w, y[:, None])
        self.raises(ValueError, "weight has 4 columns but embeddings has 5", MF.normface, x, w[:, :4], y)
        self.raises(ValueError, "labels has 5 entries but embeddings has 6 rows", MF.normface, x, w, y[:5])
        self.raises(ValueError, "one entry per class", MF.adaptive_margin, x, w, y, torch.zeros(C + 1,
                                                                                             dtype=torch.float64))
        self.raises(ValueError, "X has 0 rows", MF.normface, x[:0], w, y[:0])

    def test_values_from_the_library(self):
        x, w, y = inputs()
        self.raises(ValueError, r"labels\[2\] = 9 is out of range \[0, 7\)", MF.arcface, x, w,
                    torch.tensor([0, 1, 9, 2, 3, 4]))
        self.raises(ValueError, r"labels\[0\] = -1", MF.arcface, x, w, torch.tensor([-1, 1, 2, 2, 3, 4],
                                                                                    dtype=torch.int32))
        x0 = x.clone()
        x0[3] = 0
        self.raises(ValueError, "X", MF.arcface, x0, w, y)
        xn = x.clone()
        xn[1, 2] = float("nan")
        self.raises(ValueError, "X", MF.cosface, xn, w, y)
        self.raises(ValueError, "s = -1 must be > 0", MF.arcface, x, w, y, s=-1.0)
        self.raises(ValueError, "m = 4 must be < pi", MF.arcface, x, w, y, m=4.0)
        self.raises(ValueError, "m = 7 must be an integer in 1..5", MF.sphereface, x, w, y, m=7)
        self.raises(ValueError, "m = 2.5 must be an integer", MF.sphereface, x, w, y, m=2.5)
        self.raises(ValueError, "t = 0.2 must be >= 1", MF.mv_softmax, x, w, y, t=0.2)
        self.raises(ValueError, "hard_threshold applies to the additive angular target", MF.sv_softmax, x, w, y,
                    fallback="hard_threshold")
        self.raises(ValueError, "momentum = 2 must be in", MF.curricular_face, x, w, y, momentum=2.0)
        self.raises(ValueError, "CosFace: margins\\(1\\) = -0.5 is not a valid margin \\(CosFace: m = -0.5 must be >= 0\\)",
                    MF.class_margins, x, w, y, torch.tensor([0.1, -0.5, 0, 0, 0, 0, 0], dtype=torch.float64))
        self.raises(ValueError, "ArcFace: margins\\(2\\) = 4 is not a valid margin \\(ArcFace: m = 4 must be < pi\\)",
                    MF.class_margins, x, w, y, torch.tensor([0.1, 0.5, 4, 0, 0, 0, 0], dtype=torch.float64),
                    base="arcface")
        self.raises(ValueError, "AdaptiveMargin: margins\\(3\\) = nan must be finite", MF.adaptive_margin, x, w, y,
                    torch.tensor([0.1, 0.5, 0.2, float("nan"), 0, 0, 0], dtype=torch.float64))
        self.raises(ValueError, "margins\\(0\\) = inf must be finite", MF.adaptive_margin, x, w, y,
                    torch.full((C,), float("inf"), dtype=torch.float64))

    def test_names(self):
        x, w, y = inputs()
        self.raises(ValueError, "fallback = 'hard' is not one of", MF.arcface, x, w, y, fallback="hard")
        self.raises(ValueError, "gradient = 'ste' is not one of", MF.arcface, x, w, y, gradient="ste")
        self.raises(ValueError, "target = 'arc' is not one of", MF.mv_softmax, x, w, y, target="arc")
        self.raises(ValueError, "variant", MF.mv_softmax, x, w, y, variant="x")
        self.raises(ValueError, "scale_mode", MF.sphereface, x, w, y, scale_mode="norm")
        self.raises(ValueError, "scope", MF.adaptive_margin, x, w, y, torch.zeros(C, dtype=torch.float64), scope="x")
        self.raises(ValueError, "base = 'normface' is not one of", MF.class_margins, x, w, y,
                    torch.zeros(C, dtype=torch.float64), base="normface")
        self.raises(TypeError, "m comes from margins", MF.class_margins, x, w, y, torch.zeros(C, dtype=torch.float64),
                    m=0.3)
        self.raises(TypeError, "unexpected keyword", MF.class_margins, x, w, y, torch.zeros(C, dtype=torch.float64),
                    base="arcface", t=1.2)
        self.raises(TypeError, "unexpected keyword", MF.sphereface, x, w, y, lam=1.0)

    def test_devices(self):
        x, w, y = inputs()
        self.raises(ValueError, "only CPU tensors", MF.arcface, x.to("meta"), w, y)
        if torch.cuda.is_available():  # pragma: no cover - CPU-only torch here
            self.raises(NotImplementedError, "CUDA tensor", MF.arcface, x.cuda(), w.cuda(), y.cuda())

    def test_curricular_tau_untouched_on_error(self):
        head = marginloss.CurricularFace(C, D, dtype=torch.float64)
        x, _, _ = inputs()
        with self.assertRaises(ValueError):
            head(x, torch.tensor([0, 1, 2, 3, 4, C]))
        self.assertEqual(float(head.tau), 0.0)

    def test_second_backward(self):
        x, w, y = inputs()
        x.requires_grad_(True)
        loss = MF.arcface(x, w, y)
        loss.backward(retain_graph=True)
        with self.assertRaises(RuntimeError):
            loss.backward()


if __name__ == "__main__":
    unittest.main(verbosity=2)
