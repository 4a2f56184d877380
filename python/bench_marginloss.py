#!/usr/bin/env python3
"""marginloss (the PyTorch package) against pure PyTorch: time of one training step of the loss,
forward + backward to the embeddings and the class weights, float32.

    python python/bench_marginloss.py [--shape 256x512x100000] [--threads 2]
        [--policies cosface,arcface,sphereface] [--reps 5] [--steps 3]
        [--compile-modes default,max-autotune] [--no-compile]

Run it with the interpreter whose torch the package was built against: Debian's python3-torch
(/usr/bin/python3, torch 1.13: eager only) or a venv with PyPI torch 2.x (eager and torch.compile;
python/README.md). Pure PyTorch is bench/compare_pytorch.py's make_loss: each policy written the
way its usual PyTorch ports write it, as one autograd graph (normalise X and W, cosines by
F.linear, clamp, the margined target gathered and scattered back, scale, F.cross_entropy,
.backward()). It runs eagerly and, where the torch in use is 2.x, compiled with torch.compile in
each mode of --compile-modes (default: torch.compile's default mode), the same function.
marginloss: marginloss.functional.<policy> on the same tensors, the same hyper-parameters.

Warm-up: two steps of every variant (torch.compile compiles in the first; that time is printed,
not counted), then one step each for the peak memory (VmHWM after the step minus VmRSS before it,
the mark reset through /proc/self/clear_refs: everything the step allocates, gradients included).
The variants are then interleaved: each repetition times --steps steps of every variant in turn,
and the reported time is the median over all timed steps, so a load change on the machine hits
every variant alike. The load average and the scheduling policy are printed (run it under
`chrt -f 10` on a shared machine). Gradients are set to None before each step, so each step
allocates its dX and dW.
"""
import argparse
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


# The pure-PyTorch losses are bench/compare_pytorch.py's make_loss (the C++ comparison times the
# same graphs), with the hyper-parameters written there; marginloss gets the same values.
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
from compare_pytorch import loaded_blas, make_loss, reset_peak, status_bytes  # noqa: E402

POLICIES = {  # name here: (compare_pytorch's name, marginloss.functional's keyword arguments)
    "normface": ("NormFace", dict(s=20.0)),
    "cosface": ("CosFace", dict(s=64.0, m=0.35)),
    "arcface": ("ArcFace", dict(s=64.0, m=0.5, fallback="hard_threshold")),
    "combined_margin": ("CombinedMargin", dict(s=64.0, m1=1.0, m2=0.3, m3=0.2, fallback="none")),
    "sphereface": ("SphereFace", dict(m=4, lambda_=5.0, scale_mode="feature_norm")),
}


def eager_loss(policy):
    if policy not in POLICIES:
        raise ValueError("unknown policy %r (%s)" % (policy, ", ".join(POLICIES)))
    name, params = POLICIES[policy]
    return make_loss(torch, F, name), params


def torch_major():
    try:
        return int(torch.__version__.split(".")[0])
    except ValueError:
        return 0


def torch_blas():
    """The BLAS library torch's matrix products run on (compare_pytorch.loaded_blas, after a
    product). Debian's python3-torch calls whatever the libblas.so.3 alternative points to: the
    reference (netlib) BLAS unless an optimised one is installed (libopenblas0-pthread, libblis4,
    MKL), and the reference BLAS is 10-30x slower, which makes any comparison meaningless. PyPI's
    torch links MKL statically."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    return loaded_blas(torch)


def make_step(fn, X, W, y):
    def step():
        X.grad = None
        W.grad = None
        loss = fn(X, W, y)
        loss.backward()
        return loss

    return step


def step_peak(step, X, W):
    """Bytes one step allocates beyond what the process holds before it (VmHWM after the step minus
    VmRSS before it, the peak mark reset first), or None where the mark cannot be reset
    (/proc/self/clear_refs refused). The previous step's gradients are dropped before the baseline
    is read, so the step's new dX and dW count in full."""
    X.grad = None
    W.grad = None
    if not reset_peak():
        return None
    base = status_bytes("VmRSS")
    step()
    return status_bytes("VmHWM") - base


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256x512x100000", help="BxDxC")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", default="cosface,arcface,sphereface",
                    help="comma-separated, of: " + ", ".join(POLICIES))
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and repetition")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-modes", default="default",
                    help="torch.compile modes to time, comma-separated: default, max-autotune, "
                         "max-autotune-no-cudagraphs, reduce-overhead (torch 2.x)")
    args = ap.parse_args(argv[1:])

    B, D, C = (int(v) for v in args.shape.split("x"))
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(42)
    X = torch.randn(B, D, generator=g).requires_grad_()
    W = torch.randn(C, D, generator=g).requires_grad_()
    y = torch.randint(0, C, (B,), generator=g)

    has_compile = hasattr(torch, "compile") and torch_major() >= 2 and not args.no_compile
    modes = [m for m in args.compile_modes.split(",") if m] if has_compile else []
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
    try:
        policy_names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
        print("scheduling: %s, priority %d" % (policy_names.get(os.sched_getscheduler(0), "other"),
                                               os.sched_getparam(0).sched_priority))
    except (AttributeError, OSError):
        pass
    print("load average before: %.2f %.2f %.2f" % os.getloadavg(), flush=True)

    for policy in [p for p in args.policies.split(",") if p]:
        eager, params = eager_loss(policy)
        ours = getattr(MF, policy)
        variants = [("marginloss", make_step(lambda a, b, c: ours(a, b, c, **params), X, W, y)),
                    ("eager", make_step(eager, X, W, y))]
        for mode in modes:
            compiled = torch.compile(eager) if mode == "default" else torch.compile(eager, mode=mode)
            variants.append(("compile" if mode == "default" else "compile:" + mode, make_step(compiled, X, W, y)))
        # Warm-up: two steps each (torch.compile compiles the forward and the backward graph in the
        # first; its time is printed, not counted), then one step each for the peak memory.
        losses, first, peaks = {}, {}, {}
        for name, step in variants:
            t0 = time.perf_counter()
            losses[name] = float(step().detach())
            first[name] = time.perf_counter() - t0
            step()
        for name, step in variants:
            peaks[name] = step_peak(step, X, W)
        times = {name: [] for name, _ in variants}
        for _ in range(args.reps):
            for name, step in variants:
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - t0)
        med = {name: 1e3 * statistics.median(v) for name, v in times.items()}
        ml = med["marginloss"]
        print("%s:" % policy)
        for name, _ in variants:
            peak = "%8.1f MiB" % (peaks[name] / 1048576.0) if peaks[name] is not None else "         - MiB"
            line = "  %-26s %8.1f ms  %6.2fx  peak %s  loss %.6f" % (name, med[name], med[name] / ml, peak,
                                                                    losses[name])
            if name.startswith("compile"):
                line += "  (first step, compiling: %.1f s)" % first[name]
            print(line, flush=True)
    print("load average after:  %.2f %.2f %.2f" % os.getloadavg())
    print("median of %d interleaved repetitions x %d steps; the x column = variant ms / marginloss ms "
          "(the speed-up of marginloss over that variant); peak = VmHWM during one step - VmRSS before it"
          % (args.reps, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
