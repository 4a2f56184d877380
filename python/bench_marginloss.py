#!/usr/bin/env python3
"""marginloss (the PyTorch package) against pure PyTorch: time of one training step of the loss,
forward + backward to the embeddings and the class weights, float32.

    /usr/bin/python3 python/bench_marginloss.py [--shape 256x512x100000] [--threads 2]
        [--policies arcface,cosface] [--reps 5] [--steps 3]

Pure PyTorch is each policy written the way its usual PyTorch ports write it, as one autograd
graph: normalise X and W, cosines by F.linear, clamp, the margined target gathered and scattered
back, scale, F.cross_entropy, .backward() (as bench/compare_pytorch.py). It runs eagerly, and
compiled with torch.compile where the torch in use has it (2.x; the compile time is excluded).
marginloss: marginloss.functional.<policy> on the same tensors.

The variants are interleaved: each repetition times --steps steps of every variant in turn, and
the reported time is the median over all timed steps (after two warm-up steps each), so a load
change on the machine hits every variant alike. The load average is printed before and after.
Gradients are set to None before each step, so each step allocates its dX and dW.
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# Import the built or installed package, not the source tree beside this script (no _C there
# unless built in place): drop this script's directory from the module path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
import marginloss  # noqa: E402
import marginloss.functional as MF  # noqa: E402


def eager_loss(policy):
    def cosines(X, W):
        return F.linear(F.normalize(X, dim=1), F.normalize(W, dim=1)).clamp(-1.0, 1.0)

    def with_target(cos, y, f, scale):
        idx = y.view(-1, 1)
        t = cos.gather(1, idx)
        return F.cross_entropy(cos.scatter(1, idx, f(t)) * scale, y)

    if policy == "normface":
        return lambda X, W, y: F.cross_entropy(cosines(X, W) * 20.0, y), dict(s=20.0)
    if policy == "cosface":
        return lambda X, W, y: with_target(cosines(X, W), y, lambda t: t - 0.35, 64.0), dict(s=64.0, m=0.35)
    if policy == "arcface":  # hard-threshold fallback, the ports' default
        m = 0.5
        cos_m, sin_m, th, mm = math.cos(m), math.sin(m), math.cos(math.pi - m), math.sin(math.pi - m) * m

        def f(t):
            sine = torch.sqrt((1.0 - t * t).clamp_min(1e-12))
            return torch.where(t > th, t * cos_m - sine * sin_m, t - mm)

        return lambda X, W, y: with_target(cosines(X, W), y, f, 64.0), dict(s=64.0, m=m)
    raise ValueError("unknown policy %r (normface, cosface, arcface)" % policy)


def torch_blas():
    """The BLAS library torch's matrix products run on, read from this process's memory map after
    a product. Debian's python3-torch calls whatever the libblas.so.3 alternative points to: the
    reference (netlib) BLAS unless an optimised one is installed (libopenblas0-pthread, libblis4,
    MKL), and the reference BLAS is 10-30x slower, which makes any comparison meaningless."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    found = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path)
                if any(k in name for k in ("blas", "blis", "mkl_rt", "mkl_core", "dnnl")):
                    found.add(os.path.realpath(path))
    except OSError:
        return "unknown (no /proc/self/maps)"
    return ", ".join(sorted(found)) or "none found (torch's own kernels)"


def make_step(fn, X, W, y):
    def step():
        X.grad = None
        W.grad = None
        loss = fn(X, W, y)
        loss.backward()
        return loss

    return step


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256x512x100000", help="BxDxC")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", default="arcface,cosface,normface")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and repetition")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = ap.parse_args(argv[1:])

    B, D, C = (int(v) for v in args.shape.split("x"))
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(42)
    X = torch.randn(B, D, generator=g).requires_grad_()
    W = torch.randn(C, D, generator=g).requires_grad_()
    y = torch.randint(0, C, (B,), generator=g)

    has_compile = hasattr(torch, "compile") and not args.no_compile
    print("torch %s, %d threads, B x D x C = %d x %d x %d, float32; marginloss build %s"
          % (torch.__version__, torch.get_num_threads(), B, D, C, marginloss.build_info()))
    if not has_compile:
        print("torch.compile: %s" % ("skipped (--no-compile)" if args.no_compile else
                                     "not available in torch %s (2.0 and later have it)" % torch.__version__))
    blas = torch_blas()
    print("torch's BLAS: %s" % blas)
    if "/blas/libblas.so" in blas:
        print("WARNING: torch runs on the reference (netlib) BLAS: PyTorch's times are not representative. "
              "Install an optimised BLAS (apt-get install libopenblas0-pthread) and rerun.")
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())

    rows = []
    for policy in [p for p in args.policies.split(",") if p]:
        eager, params = eager_loss(policy)
        ours = getattr(MF, policy)
        variants = [("marginloss", make_step(lambda a, b, c: ours(a, b, c, **params), X, W, y)),
                    ("eager", make_step(eager, X, W, y))]
        if has_compile:
            variants.append(("compile", make_step(torch.compile(eager), X, W, y)))
        losses = {}
        for name, step in variants:
            losses[name] = float(step())
            step()
        times = {name: [] for name, _ in variants}
        for _ in range(args.reps):
            for name, step in variants:
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - t0)
        med = {name: 1e3 * statistics.median(v) for name, v in times.items()}
        rows.append((policy, med, losses))
        line = "%-9s marginloss %8.1f ms   eager %8.1f ms (%.2fx)" % (policy, med["marginloss"], med["eager"],
                                                                       med["eager"] / med["marginloss"])
        if "compile" in med:
            line += "   torch.compile %8.1f ms (%.2fx)" % (med["compile"], med["compile"] / med["marginloss"])
        line += "   loss %.6f vs %.6f" % (losses["marginloss"], losses["eager"])
        print(line, flush=True)
    print("load average after:  %.2f %.2f %.2f" % os.getloadavg())
    print("median of %d interleaved repetitions x %d steps; speed-up = PyTorch ms / marginloss ms"
          % (args.reps, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
