#!/usr/bin/env python3
"""marginloss's CUDA backend against PyTorch on the GPU (eager autograd and torch.compile): fp32
forward + backward.

    python3 bench/cuda/compare_pytorch_cuda.py [cuda.json] \\
        [--policies CosFace,ArcFace,SphereFace] [--shapes 256x512x100000,512x512x100000] \\
        [--min-time 2] [--no-compile] [--markdown]

cuda.json is marginloss_bench_cuda's --benchmark_out (see bench_cuda.cu): with it, the table
shows marginloss's median loss time beside PyTorch's and the speed-up; without it, PyTorch only.

PyTorch side: each policy written the way its usual PyTorch ports write it, as one autograd
graph on the GPU (normalise X and W inside the graph, cosines by F.linear, clamp, the margined
target gathered and scattered back, scale, F.cross_entropy, .backward()). Two warm-up steps,
then steps timed with CUDA events until --min-time seconds and at least 5 steps have run; the
median is reported. torch.compile (when torch has it, unless --no-compile) compiles the same loss
function, timed the same way after its warm-up steps (which compile). Neither side enables TF32.
Gradients are set to None before every step, so each step allocates its
dX and dW. Peak memory: torch.cuda.max_memory_allocated() during one step, minus the memory
allocated before it (inputs), i.e. everything the step allocates, gradients included.

Exits with a message when torch is missing or torch.cuda.is_available() is false.
"""

import argparse
import json
import os
import statistics
import sys

# The PyTorch losses are those of the CPU comparison (bench/compare_pytorch.py), one definition.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from compare_pytorch import MiB, POLICIES, make_loss, make_step  # noqa: E402


def time_pytorch(torch, F, policy, B, D, C, min_time, compiled=False):
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0x6D617267 + C)
    X = torch.randn(B, D, device=dev, generator=gen).requires_grad_()
    W = torch.randn(C, D, device=dev, generator=gen).requires_grad_()
    y = torch.randint(0, C, (B,), device=dev, generator=gen)
    loss_fn = make_loss(torch, F, policy)
    if compiled:
        loss_fn = torch.compile(loss_fn)
    step = make_step(loss_fn, X, W, y)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    X.grad = None
    W.grad = None
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times, total = [], 0.0
    while total < min_time or len(times) < 5:
        start.record()
        step()
        stop.record()
        stop.synchronize()
        ms = start.elapsed_time(stop)
        times.append(ms)
        total += ms * 1e-3
    return statistics.median(times), peak / MiB


def marginloss_times(path):
    """{(policy, shape): (loss_ms, ratio, ws_MiB)} from marginloss_bench_cuda's JSON."""
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        parts = b["name"].split("/")
        if len(parts) < 3 or parts[0] != "loss":
            continue
        out[(parts[1], parts[2])] = (b.get("loss_ms"), b.get("ratio"), b.get("ws_MiB"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="?", help="marginloss_bench_cuda --benchmark_out JSON")
    ap.add_argument("--policies", default="CosFace,ArcFace,SphereFace")
    ap.add_argument("--shapes", default="256x512x100000,512x512x100000")
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--markdown", action="store_true", help="(the table is always Markdown; kept for symmetry)")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the torch.compile column (it is timed when torch has torch.compile)")
    args = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        sys.exit("compare_pytorch_cuda.py: PyTorch is not importable (%s); run it with /usr/bin/python3 "
                 "and python3-torch, or a CUDA build of torch" % e)
    if not torch.cuda.is_available():
        sys.exit("compare_pytorch_cuda.py: torch.cuda.is_available() is False (torch %s, built with CUDA %s): "
                 "no GPU or no CUDA build of PyTorch, nothing to compare" % (torch.__version__, torch.version.cuda))

    ml = marginloss_times(args.json) if args.json else {}
    policies = [p for p in args.policies.split(",") if p]
    for p in policies:
        if p not in POLICIES:
            sys.exit("unknown policy %s (known: %s)" % (p, ", ".join(POLICIES)))
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]

    print("Device: %s, torch %s (CUDA %s), fp32, forward + backward, median of CUDA-event timings\n"
          % (torch.cuda.get_device_name(0), torch.__version__, torch.version.cuda))
    compiled = hasattr(torch, "compile") and not args.no_compile
    head = "| policy | B x D x C | PyTorch eager ms |"
    rule = "|---|---|---:|"
    if compiled:
        head += " torch.compile ms |"
        rule += "---:|"
    if ml:
        head += " marginloss ms | speed-up vs eager |" + (" vs compile |" if compiled else "") + \
            " loss / products | PyTorch eager peak MiB | marginloss workspace MiB |"
        rule += "---:|---:|" + ("---:|" if compiled else "") + "---:|---:|---:|"
    else:
        head += " PyTorch eager peak MiB |"
        rule += "---:|"
    print(head)
    print(rule)
    for (B, D, C) in shapes:
        for p in policies:
            pt_ms, pt_peak = time_pytorch(torch, F, p, B, D, C, args.min_time)
            row = "| %s | %dx%dx%d | %.3f |" % (p, B, D, C, pt_ms)
            pc_ms = None
            if compiled:
                try:
                    pc_ms, _ = time_pytorch(torch, F, p, B, D, C, args.min_time, compiled=True)
                    row += " %.3f |" % pc_ms
                except Exception as e:  # torch.compile needs a working Triton/C++ toolchain
                    print("torch.compile failed for %s: %s" % (p, str(e).splitlines()[0] if str(e) else e),
                          file=sys.stderr)
                    row += " - |"
            key = (p, "%dx%dx%d" % (B, D, C))
            if ml:
                ml_ms, ratio, ws = ml.get(key, (None, None, None))
                row += " %s | %s |" % ("%.3f" % ml_ms if ml_ms else "-", "%.2fx" % (pt_ms / ml_ms) if ml_ms else "-")
                if compiled:
                    row += " %s |" % ("%.2fx" % (pc_ms / ml_ms) if ml_ms and pc_ms else "-")
                row += " %s | %.0f | %s |" % ("%.3f" % ratio if ratio else "-", pt_peak, "%.0f" % ws if ws else "-")
            else:
                row += " %.0f |" % pt_peak
            print(row)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
