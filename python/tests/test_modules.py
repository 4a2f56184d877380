"""The torch.nn.Module heads against pure-PyTorch heads built on reference.py: the loss of one
forward, then a few SGD training steps of (a linear embedding layer + the head) compared step by
step (losses, the head's weights, the embedding layer, CurricularFace's tau, AdaptiveMargin's
margins), in float64 to 1e-10.
"""
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

import marginloss  # noqa: E402

TOL = 1e-10
B, K, D, C = 16, 12, 8, 30

HEADS = [
    ("NormFace", R.normface, {}),
    ("CosFace", R.cosface, dict(s=30.0, m=0.4)),
    ("ArcFace", R.arcface, dict(s=32.0, m=0.5)),
    ("ArcFace", R.arcface, dict(s=32.0, m=0.5, fallback="none", gradient="straight_through")),
    ("CombinedMargin", R.combined_margin, dict(s=32.0)),
    ("SphereFace", R.sphereface, dict(m=4, lambda_=5.0)),
    ("SVSoftmax", R.sv_softmax, dict(m=0.35, t=1.2)),
    ("MVSoftmax", R.mv_softmax, dict(target="additive_angular", m=0.5, fallback="hard_threshold")),
    ("AMMSoftmax", R.amm_softmax, dict(s=32.0)),
]


def data(seed):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(B, K, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (B,), generator=g)
    return inputs, labels


def train(embed, head_params, loss_fn, steps=3, lr=0.5, after_step=None):
    """SGD on (embed, head parameters); loss_fn(embeddings, labels, step) -> loss. Returns the losses."""
    opt = torch.optim.SGD(list(embed.parameters()) + list(head_params), lr=lr)
    losses = []
    for step in range(steps):
        inputs, labels = data(100 + step)
        opt.zero_grad()
        loss = loss_fn(embed(inputs), labels)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        losses.append(loss.item())
    return losses


def twin_embeddings(seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Linear(K, D).double()
    b = torch.nn.Linear(K, D).double()
    b.load_state_dict(a.state_dict())
    return a, b


def close(a, b):
    return (torch.as_tensor(a) - torch.as_tensor(b)).abs().max().item()


class HeadsAgainstPyTorch(unittest.TestCase):
    def test_forward_and_training_steps(self):
        for cls_name, ref_fn, params in HEADS:
            with self.subTest(head=cls_name, params=params):
                torch.manual_seed(1)
                head = getattr(marginloss, cls_name)(C, D, dtype=torch.float64, **params)
                self.assertEqual(tuple(head.weight.shape), (C, D))
                w_ref = torch.nn.Parameter(head.weight.detach().clone())
                embed, embed_ref = twin_embeddings()
                ours = train(embed, head.parameters(), head)
                ref = train(embed_ref, [w_ref], lambda e, y: ref_fn(e, w_ref, y, **params))
                err = max(close(ours, ref), close(head.weight.detach(), w_ref.detach()),
                          close(embed.weight.detach(), embed_ref.weight.detach()))
                print("  %-14s %-60s 3 SGD steps: max |d| %.1e" % (cls_name, params, err))
                self.assertLessEqual(err, TOL)

    def test_curricular_face_tau_buffer(self):
        torch.manual_seed(2)
        head = marginloss.CurricularFace(C, D, s=32.0, m=0.5, dtype=torch.float64)
        self.assertIn("tau", dict(head.named_buffers()))
        self.assertEqual(float(head.tau), 0.0)
        w_ref = torch.nn.Parameter(head.weight.detach().clone())
        tau_ref = [0.0]

        def ref_loss(e, y):
            t = R.target_cosines(e, w_ref, y)  # updated BEFORE use, from the raw target cosines
            tau_ref[0] = 0.01 * t.mean().item() + 0.99 * tau_ref[0]
            return R.curricular_face(e, w_ref, y, s=32.0, m=0.5, tau=tau_ref[0])

        embed, embed_ref = twin_embeddings(3)
        ours = train(embed, head.parameters(), head, steps=4)
        ref = train(embed_ref, [w_ref], ref_loss, steps=4)
        err = max(close(ours, ref), close(head.weight.detach(), w_ref.detach()), abs(float(head.tau) - tau_ref[0]))
        print("  CurricularFace 4 SGD steps: max |d| (losses, W, tau) %.1e, tau %.6f" % (err, float(head.tau)))
        self.assertLessEqual(err, TOL)
        self.assertNotEqual(float(head.tau), 0.0)
        # eval mode: tau is used, not updated
        head.eval()
        tau = float(head.tau)
        inputs, labels = data(7)
        with torch.no_grad():
            loss = head(embed(inputs), labels)
            ref = R.curricular_face(embed(inputs), head.weight, labels, s=32.0, m=0.5, tau=tau)
        self.assertEqual(float(head.tau), tau)
        self.assertLessEqual(abs(loss.item() - ref.item()), TOL)
        self.assertIn("tau", head.state_dict())

    def test_adaptive_margin_head(self):
        torch.manual_seed(4)
        head = marginloss.AdaptiveMargin(C, D, s=30.0, lambda_m=20.0, dtype=torch.float64)
        m0 = head.margins.detach().clone()
        self.assertTrue(bool(((m0 >= 0.3) & (m0 <= 0.4)).all()))
        w_ref = torch.nn.Parameter(head.weight.detach().clone())
        m_ref = torch.nn.Parameter(head.margins.detach().clone())
        embed, embed_ref = twin_embeddings(5)
        ours = train(embed, head.parameters(), head, lr=0.5, after_step=head.project_margins)
        ref = train(embed_ref, [w_ref, m_ref], lambda e, y: R.adaptive_margin(e, w_ref, y, m_ref, s=30.0,
                                                                               lambda_m=20.0),
                    lr=0.5, after_step=lambda: m_ref.data.clamp_(0.0, 1.0))
        err = max(close(ours, ref), close(head.weight.detach(), w_ref.detach()),
                  close(head.margins.detach(), m_ref.detach()))
        print("  AdaptiveMargin 3 SGD steps + projection: max |d| (losses, W, margins) %.1e" % err)
        self.assertLessEqual(err, TOL)
        self.assertFalse(torch.equal(head.margins.detach(), m0))

    def test_class_margins_head(self):
        margins = torch.linspace(0.1, 0.5, C, dtype=torch.float64)
        torch.manual_seed(6)
        head = marginloss.ClassMargins(C, D, margins, base="arcface", s=32.0, dtype=torch.float64)
        self.assertIn("margins", dict(head.named_buffers()))
        w_ref = torch.nn.Parameter(head.weight.detach().clone())
        embed, embed_ref = twin_embeddings(7)
        ours = train(embed, head.parameters(), head)
        ref = train(embed_ref, [w_ref], lambda e, y: R.class_margins(e, w_ref, y, margins, base="arcface", s=32.0))
        err = max(close(ours, ref), close(head.weight.detach(), w_ref.detach()))
        self.assertLessEqual(err, TOL)

    def test_sphereface_lambda_schedule(self):
        torch.manual_seed(8)
        sched = marginloss.LambdaSchedule()
        head = marginloss.SphereFace(C, D, lambda_schedule=sched, dtype=torch.float64)
        w_ref = torch.nn.Parameter(head.weight.detach().clone())
        it = [0]

        def ref_loss(e, y):
            it[0] += 1
            lam = max(5.0, 1000.0 * (1.0 + 0.12 * it[0]) ** -1.0)
            return R.sphereface(e, w_ref, y, m=4, lambda_=lam)

        embed, embed_ref = twin_embeddings(9)
        ours = train(embed, head.parameters(), head, lr=0.05)
        ref = train(embed_ref, [w_ref], ref_loss, lr=0.05)
        self.assertLessEqual(max(close(ours, ref), close(head.weight.detach(), w_ref.detach())), TOL)
        self.assertEqual(int(head.iteration), 3)
        self.assertAlmostEqual(head.lambda_, 1000.0 / 1.36)

    def test_float32_module_and_repr(self):
        head = marginloss.ArcFace(10, 4)
        self.assertEqual(head.weight.dtype, torch.float32)
        loss = head(torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 9]))
        loss.backward()
        self.assertEqual(head.weight.grad.shape, (10, 4))
        self.assertIn("m=0.5", repr(head))
        with self.assertRaises(TypeError):
            marginloss.ArcFace(10, 4, margin=0.5)


if __name__ == "__main__":
    torch.set_num_threads(1)
    unittest.main(verbosity=2)
