"""The Python extension against a pure-PyTorch implementation of the same losses (float64).

Run by CTest with PYTHONPATH pointing at the built module; exits non-zero on failure.
"""
import math
import sys

import torch

import marginloss_torch


def reference(x, w, labels, kind, s, m):
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(w, dim=1).t()
    cos = cos.clamp(-1.0, 1.0)
    t = cos.gather(1, labels[:, None])[:, 0]
    if kind == "cosface":
        target = t - m
    else:  # ArcFace, hard-threshold fallback
        target = torch.where(t > math.cos(math.pi - m), torch.cos(torch.acos(t) + m), t - m * math.sin(m))
    one_hot = torch.nn.functional.one_hot(labels, w.shape[0]).to(x.dtype)
    return torch.nn.functional.cross_entropy(s * (cos + one_hot * (target - t)[:, None]), labels)


def grads(fn, x0, w0):
    x = x0.clone().requires_grad_(True)
    w = w0.clone().requires_grad_(True)
    loss = fn(x, w)
    (0.37 * loss).backward()
    return loss.detach(), x.grad, w.grad


def main():
    torch.manual_seed(0)
    failures = 0
    x0 = torch.randn(32, 16, dtype=torch.float64)
    w0 = torch.randn(12, 16, dtype=torch.float64)
    labels = torch.arange(32) % 12
    x0[:3] = -w0[labels[:3]] + 0.05 * torch.randn(3, 16, dtype=torch.float64)  # ArcFace fallback
    for kind, s, m in (("arcface", 64.0, 0.5), ("cosface", 64.0, 0.35)):
        ours = grads(lambda x, w: getattr(marginloss_torch, kind)(x, w, labels, s, m), x0, w0)
        ref = grads(lambda x, w: reference(x, w, labels, kind, s, m), x0, w0)
        err = max((a - b).abs().max().item() for a, b in zip(ours, ref))
        ok = err <= 1e-10
        failures += not ok
        print(f"  {kind:8s} s={s} m={m}: max |difference| (loss, dX, dW) {err:.1e}  {'ok' if ok else 'FAILED'}")
    try:
        marginloss_torch.arcface(x0, w0, labels + 12, 64.0, 0.5)
        print("  out-of-range label did not raise  FAILED")
        failures += 1
    except ValueError as e:
        print(f"  out-of-range label raises ValueError: {str(e)[:50]}  ok")
    print("all checks passed" if not failures else "FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
