#!/usr/bin/env python3
"""marginloss against PyTorch autograd: time and peak memory of fp32 forward + backward.

    /usr/bin/python3 bench/compare_pytorch.py build/bench/bench/eigen.json \\
        [blas.json ...] [--peak-bin build/bench/bench/marginloss_peak_memory] \\
        [--policies CosFace,ArcFace] [--shapes 128x512x10000,256x512x100000] \\
        [--min-time 3] [--threads 2] [--markdown]

Run it with Debian's python3-torch (/usr/bin/python3). The JSON files are
marginloss_bench's --benchmark_out (see bench/README.md); the loss rows found there give
marginloss's times, and only the policies and shapes found there are run in PyTorch.

PyTorch side: each policy written the way its usual PyTorch ports write it, as one
autograd graph (normalise X and W inside the graph, cosines by F.linear, clamp, the margined
target gathered and scattered back, scale, F.cross_entropy, .backward()). Each case runs
in its own subprocess: imports and inputs first, two warm-up steps, then the peak-RSS mark
is reset (/proc/self/clear_refs; where that is refused, the baseline is the peak so far)
and one step's peak is read from VmHWM: peak memory = VmHWM - VmRSS before the step, i.e.
everything the step allocates beyond its inputs, the gradients included. Then steps are
timed until --min-time seconds and at least 3 steps have run; the median is reported.
Gradients are set to None before every step (zero_grad(set_to_none=True)), so each step
allocates its dX and dW, like marginloss's allocating forward_backward().

marginloss side: time = the loss benchmark's median (loss_ms). Peak memory: with
--peak-bin, marginloss_peak_memory is run per case (same method, a process of its own);
without, the estimate Workspace::bytes_required + dX + dW is shown (marked ~).

speed-up = PyTorch ms / marginloss ms; memory ratio = PyTorch peak / marginloss peak.
Plain python3 and torch, nothing else.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

MiB = 1024.0 * 1024.0
POLICIES = ("NormFace", "CosFace", "ArcFace", "CombinedMargin", "SphereFace")


# ----------------------------------------------------------------------------------------
# Memory of this process, from /proc/self/status
# ----------------------------------------------------------------------------------------
def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------
# The losses in PyTorch autograd (child process)
# ----------------------------------------------------------------------------------------
def make_loss(torch, F, policy):
    def cosines(X, W):
        return F.linear(F.normalize(X, dim=1), F.normalize(W, dim=1)).clamp(-1.0, 1.0)

    def with_target(cos, y, f, scale):
        idx = y.view(-1, 1)
        t = cos.gather(1, idx)
        logits = cos.scatter(1, idx, f(t))
        return F.cross_entropy(logits * scale, y)

    if policy == "NormFace":
        s = 20.0
        return lambda X, W, y: F.cross_entropy(cosines(X, W) * s, y)
    if policy == "CosFace":
        s, m = 64.0, 0.35
        return lambda X, W, y: with_target(cosines(X, W), y, lambda t: t - m, s)
    if policy == "ArcFace":  # hard-threshold fallback (the PyTorch ports' default)
        s, m = 64.0, 0.5
        cos_m, sin_m = math.cos(m), math.sin(m)
        th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

        def f(t):
            sine = torch.sqrt((1.0 - t * t).clamp_min(1e-12))
            phi = t * cos_m - sine * sin_m
            return torch.where(t > th, phi, t - mm)

        return lambda X, W, y: with_target(cosines(X, W), y, f, s)
    if policy == "CombinedMargin":  # cos(m1 theta + m2) - m3, no fallback
        s, m1, m2, m3 = 64.0, 1.0, 0.3, 0.2

        def f(t):
            theta = torch.acos(t.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
            return torch.cos(m1 * theta + m2) - m3

        return lambda X, W, y: with_target(cosines(X, W), y, f, s)
    if policy == "SphereFace":  # m = 4, lambda = 5, scale = feature norm
        m, lam = 4, 5.0
        bounds = [math.cos(j * math.pi / m) for j in range(1, m)]

        def loss(X, W, y):
            cos = cosines(X, W)
            scale = X.norm(dim=1, keepdim=True)

            def f(t):
                t2 = t * t
                cos_mt = 8.0 * t2 * t2 - 8.0 * t2 + 1.0  # T_4(t) = cos(4 theta)
                k = sum((t.detach() <= b).to(t.dtype) for b in bounds)
                sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
                psi = sign * cos_mt - 2.0 * k
                return (lam * t + psi) / (1.0 + lam)

            return with_target(cos, y, f, scale)

        return loss
    raise ValueError("unknown policy " + policy)


def make_step(loss_fn, X, W, y):
    """One forward + backward; the gradients are set to None first, so each step allocates its dX
    and dW as a training step would. Returns the loss tensor."""
    def step():
        X.grad = None
        W.grad = None
        loss = loss_fn(X, W, y)
        loss.backward()
        return loss

    return step


def loaded_blas():
    """The BLAS libraries this process has mapped (after torch ran a product): Debian's torch
    calls whatever the libblas.so.3 alternative points to, the reference (netlib) BLAS unless an
    optimised one is installed, and its times then say nothing about PyTorch."""
    found = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                name = os.path.basename(parts[-1]) if len(parts) >= 6 else ""
                if any(k in name for k in ("blas", "blis", "mkl_rt", "mkl_core", "dnnl")):
                    found.add(os.path.realpath(parts[-1]))
    except OSError:
        return "unknown"
    return ", ".join(sorted(found)) or "none"


def child(policy, B, D, C, min_time, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(42)
    X = torch.randn(B, D, generator=g, dtype=torch.float32).requires_grad_()
    W = torch.randn(C, D, generator=g, dtype=torch.float32).requires_grad_()
    y = torch.randint(0, C, (B,), generator=g)
    step = make_step(make_loss(torch, F, policy), X, W, y)
    value = float(step())
    step()
    reset = reset_peak()
    base = status_bytes("VmRSS") if reset else status_bytes("VmHWM")
    step()
    peak = status_bytes("VmHWM")

    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "policy": policy, "B": B, "D": D, "C": C, "loss": value,
        "ms": 1e3 * statistics.median(times), "steps": len(times),
        "peak_delta": peak - base, "peak_reset": reset,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "blas": loaded_blas(),
    }))


# ----------------------------------------------------------------------------------------
# Parent: read marginloss's JSON, run the cases, print the table
# ----------------------------------------------------------------------------------------
def read_marginloss(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data.get("benchmarks", []):
        name = (b.get("run_name") or b["name"]).replace("/manual_time", "")
        parts = name.split("/")
        if parts[0] != "loss":
            continue
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        key = (parts[1], int(b["B"]), int(b["D"]), int(b["C"]))
        if key in rows and rows[key].get("run_type") == "aggregate":
            continue
        rows[key] = b
    label = data.get("context", {}).get("products", os.path.basename(path))
    return label, rows


def run_child(script, python, policy, B, D, C, min_time, threads):
    cmd = [python, script, "--child", policy, str(B), str(D), str(C),
           "--min-time", str(min_time), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_peak(binary, policy, B, D, C):
    out = subprocess.run([binary, policy, str(B), str(D), str(C)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def shape_str(B, D, C):
    return "%dx%dx%d" % (B, D, C)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="*", help="marginloss_bench --benchmark_out JSON files")
    ap.add_argument("--child", nargs=4, metavar=("POLICY", "B", "D", "C"), help=argparse.SUPPRESS)
    ap.add_argument("--peak-bin", help="marginloss_peak_memory, to measure marginloss's peak memory")
    ap.add_argument("--peak-only", action="store_true",
                    help="only measure marginloss's peak memory with --peak-bin (no PyTorch, no JSON needed)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--shapes", default="128x512x10000,256x512x100000,512x512x100000")
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds of timed PyTorch steps per case")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter with torch for the cases")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--save", help="write the measured PyTorch and peak numbers to this JSON file")
    args = ap.parse_args(argv[1:])

    if args.child:
        p, B, D, C = args.child
        child(p, int(B), int(D), int(C), args.min_time, args.threads)
        return 0

    policies = [p for p in args.policies.split(",") if p]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]

    if args.peak_only:
        if not args.peak_bin:
            ap.error("--peak-only needs --peak-bin")
        print("| policy | B×D×C | peak MiB | workspace MiB | dX+dW MiB |")
        print("|---|---|---:|---:|---:|")
        for p in policies:
            for (B, D, C) in shapes:
                r = run_peak(args.peak_bin, p, B, D, C)
                print("| %s | %s | %.1f | %.1f | %.1f |" % (p, shape_str(B, D, C), r["peak_delta"] / MiB,
                                                           r["workspace_bytes"] / MiB, r["gradient_bytes"] / MiB))
        return 0

    if not args.json:
        ap.error("give at least one marginloss_bench JSON file (or --peak-only)")
    sources = [read_marginloss(path) for path in args.json]

    script = os.path.abspath(__file__)
    results = []
    for p in policies:
        for (B, D, C) in shapes:
            key = (p, B, D, C)
            if not any(key in rows for _, rows in sources):
                print("skip %s %s: not in the JSON" % (p, shape_str(B, D, C)), file=sys.stderr)
                continue
            t = run_child(script, args.python, p, B, D, C, args.min_time, args.threads)
            if not results:
                print("PyTorch %s, BLAS: %s" % (t.get("torch"), t.get("blas")), file=sys.stderr)
                if "/blas/libblas.so" in t.get("blas", ""):
                    print("WARNING: PyTorch runs on the reference (netlib) BLAS; its times are not representative "
                          "(apt-get install libopenblas0-pthread)", file=sys.stderr)
            if args.peak_bin:
                pk = run_peak(args.peak_bin, p, B, D, C)
                ml_peak, exact = pk["peak_delta"], True
            else:
                ml_peak = 4 * (B * D + C * D)  # dX + dW
                for _, rows in sources:
                    if key in rows:
                        ml_peak += rows[key]["ws_MiB"] * MiB
                        break
                exact = False
            results.append({"key": key, "torch": t, "ml_peak": ml_peak, "exact": exact})
            print("done %s %s: torch %.1f ms" % (p, shape_str(B, D, C), t["ms"]), file=sys.stderr)

    if args.save:
        with open(args.save, "w") as f:
            json.dump([{"policy": r["key"][0], "B": r["key"][1], "D": r["key"][2], "C": r["key"][3],
                        "torch": r["torch"], "marginloss_peak": r["ml_peak"], "peak_measured": r["exact"]}
                       for r in results], f, indent=1)

    head = ["policy", "B×D×C", "PyTorch ms"]
    for label, _ in sources:
        head += ["marginloss ms (%s)" % label, "speed-up (%s)" % label]
    head += ["PyTorch peak MiB", "marginloss peak MiB", "memory ratio"]
    lines = []
    for r in results:
        p, B, D, C = r["key"]
        t = r["torch"]
        row = [p, shape_str(B, D, C), "%.1f" % t["ms"]]
        for _, rows in sources:
            b = rows.get(r["key"])
            if b is None:
                row += ["-", "-"]
            else:
                row += ["%.1f" % b["loss_ms"], "%.2f×" % (t["ms"] / b["loss_ms"])]
        tp, mp = t["peak_delta"] / MiB, r["ml_peak"] / MiB
        row += ["%.1f" % tp, ("%.1f" if r["exact"] else "~%.1f") % mp, "%.2f×" % (tp / mp) if mp > 0 else "-"]
        lines.append(row)

    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for row in lines:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(head)]
        print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
        for row in lines:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    if results:
        t = results[0]["torch"]
        print("\nPyTorch %s, %d threads; speed-up = PyTorch ms / marginloss ms; memory ratio = PyTorch peak / "
              "marginloss peak (peak = VmHWM during one step minus VmRSS before it)" % (t["torch"], t["threads"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
