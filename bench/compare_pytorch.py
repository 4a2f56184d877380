#!/usr/bin/env python3
"""marginloss against PyTorch autograd (eager; torch.compile on torch 2.x): fp32 forward + backward time, peak memory.

    /usr/bin/python3 bench/compare_pytorch.py build/bench/bench/eigen.json \\
        [blas.json ...] [--peak-bin build/bench/bench/marginloss_peak_memory] \\
        [--policies CosFace,ArcFace] [--shapes 128x512x10000,256x512x100000] \\
        [--min-time 3] [--threads 2] [--markdown] \\
        [--python /path/to/venv/bin/python] [--compile-modes default,max-autotune] [--no-compile]

By default the cases run with Debian's python3-torch (/usr/bin/python3, torch 1.13: eager only).
--python names another interpreter for them, e.g. a venv holding PyPI's torch 2.x (bench/README.md:
`pip install torch numpy` in a venv, never in CI); with a torch that has torch.compile, each case
also times the same loss function under torch.compile, in every mode of --compile-modes. The JSON
files are marginloss_bench's --benchmark_out (see bench/README.md); the loss rows found there give
marginloss's times, and only the policies and shapes found there are run in PyTorch.

PyTorch side: each policy written the way its usual PyTorch ports write it, as one
autograd graph (normalise X and W inside the graph, cosines by F.linear, clamp, the margined
target gathered and scattered back, scale, F.cross_entropy, .backward()). Each case runs
in its own subprocess: imports and inputs first, two warm-up steps of each variant (eager, then
each torch.compile mode: its first step compiles), then for each variant the peak-RSS mark is
reset (/proc/self/clear_refs; where that is refused, the baseline is the peak so far) and one
step's peak is read from VmHWM: peak memory = VmHWM - VmRSS before the step, i.e. everything the
step allocates beyond its inputs, the gradients included. Then the variants are timed
interleaved (one step of each in turn) until --min-time seconds per variant and at least 3
rounds have run; the medians are reported. Gradients are set to None before every step
(zero_grad(set_to_none=True)), so each step allocates its dX and dW, like marginloss's
allocating forward_backward().

marginloss side: time = the loss benchmark's median (loss_ms). Peak memory: with
--peak-bin, marginloss_peak_memory is run per case (same method, a process of its own);
without, the estimate Workspace::bytes_required + dX + dW is shown (marked ~).

speed-up = PyTorch eager ms / marginloss ms; vs compile = torch.compile ms / marginloss ms;
memory ratio = PyTorch eager peak / marginloss peak. Plain python3 and torch, nothing else.
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


def loaded_blas(torch=None):
    """The BLAS torch's products run on, after torch ran a product: a statically linked MKL where
    torch's build settings say BLAS_INFO=mkl (PyPI's torch), else the BLAS libraries this process
    has mapped. Debian's torch (BLAS_INFO=generic) calls whatever the libblas.so.3 alternative
    points to, the reference (netlib) BLAS unless an optimised one is installed, and its times
    then say nothing about PyTorch. cuBLAS and numpy's own OpenBLAS are not torch's CPU BLAS."""
    if torch is not None:
        try:
            if "BLAS_INFO=mkl" in torch.__config__.show():
                return "MKL (linked into libtorch_cpu)"
        except Exception:  # noqa: BLE001 -- only a label
            pass
    found = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                path = parts[-1] if len(parts) >= 6 else ""
                name = os.path.basename(path)
                if "cublas" in name or "numpy" in path:
                    continue
                if any(k in name for k in ("blas", "blis", "mkl_rt", "mkl_core", "dnnl")):
                    found.add(os.path.realpath(path))
    except OSError:
        return "unknown"
    return ", ".join(sorted(found)) or "none"


def has_compile(torch):
    """torch.compile exists (torch 2.0 and later)."""
    try:
        return hasattr(torch, "compile") and int(torch.__version__.split(".")[0]) >= 2
    except ValueError:
        return False


def child(policy, B, D, C, min_time, threads, compile_modes=()):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(42)
    X = torch.randn(B, D, generator=g, dtype=torch.float32).requires_grad_()
    W = torch.randn(C, D, generator=g, dtype=torch.float32).requires_grad_()
    y = torch.randint(0, C, (B,), generator=g)
    loss_fn = make_loss(torch, F, policy)
    variants = [("eager", make_step(loss_fn, X, W, y))]
    if has_compile(torch):
        for mode in compile_modes:
            compiled = torch.compile(loss_fn) if mode == "default" else torch.compile(loss_fn, mode=mode)
            variants.append(("compile" if mode == "default" else "compile:" + mode, make_step(compiled, X, W, y)))

    # Two warm-up steps each (torch.compile compiles the forward and backward graphs in the first).
    values, first = {}, {}
    for name, step in variants:
        t0 = time.perf_counter()
        values[name] = float(step().detach())
        first[name] = time.perf_counter() - t0
        step()
    peaks = {}
    for name, step in variants:
        # Drop the previous step's gradients first: freed inside the step (munmap), they would
        # otherwise offset the new dX and dW in VmHWM - VmRSS.
        X.grad = None
        W.grad = None
        reset = reset_peak()
        base = status_bytes("VmRSS") if reset else status_bytes("VmHWM")
        step()
        peaks[name] = (status_bytes("VmHWM") - base, reset)

    # Interleaved: one step of each variant in turn, until --min-time per variant and 3 rounds.
    times = {name: [] for name, _ in variants}
    t_end = time.perf_counter() + min_time * len(variants)
    while len(times["eager"]) < 3 or time.perf_counter() < t_end:
        for name, step in variants:
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    out = {
        "policy": policy, "B": B, "D": D, "C": C, "loss": values["eager"],
        "ms": 1e3 * statistics.median(times["eager"]), "steps": len(times["eager"]),
        "peak_delta": peaks["eager"][0], "peak_reset": peaks["eager"][1],
        "threads": torch.get_num_threads(), "torch": torch.__version__, "blas": loaded_blas(torch),
        "compiled": {},
    }
    for name, _ in variants[1:]:
        out["compiled"][name] = {"ms": 1e3 * statistics.median(times[name]), "steps": len(times[name]),
                                 "loss": values[name], "first_step_s": first[name],
                                 "peak_delta": peaks[name][0], "peak_reset": peaks[name][1]}
    print(json.dumps(out))


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


def run_child(script, python, policy, B, D, C, min_time, threads, compile_modes):
    cmd = [python, script, "--child", policy, str(B), str(D), str(C),
           "--min-time", str(min_time), "--threads", str(threads),
           "--compile-modes", ",".join(compile_modes) if compile_modes else "none"]
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
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds of timed PyTorch steps per case and variant")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter with torch for the cases (a venv's python for PyPI torch 2.x)")
    ap.add_argument("--compile-modes", default="default",
                    help="torch.compile modes timed beside eager where the torch is 2.x, comma-separated "
                         "(default, max-autotune, ...); 'none' = eager only")
    ap.add_argument("--no-compile", action="store_true", help="eager only (same as --compile-modes none)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--save", help="write the measured PyTorch and peak numbers to this JSON file")
    args = ap.parse_args(argv[1:])

    compile_modes = [] if args.no_compile else [m for m in args.compile_modes.split(",") if m and m != "none"]
    if args.child:
        p, B, D, C = args.child
        child(p, int(B), int(D), int(C), args.min_time, args.threads, compile_modes)
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
            t = run_child(script, args.python, p, B, D, C, args.min_time, args.threads, compile_modes)
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
            print("done %s %s: torch eager %.1f ms%s" % (
                p, shape_str(B, D, C), t["ms"], "".join(", %s %.1f ms (first step %.1f s)" % (
                    n, c["ms"], c["first_step_s"]) for n, c in t.get("compiled", {}).items())), file=sys.stderr)

    if args.save:
        with open(args.save, "w") as f:
            json.dump([{"policy": r["key"][0], "B": r["key"][1], "D": r["key"][2], "C": r["key"][3],
                        "torch": r["torch"], "marginloss_peak": r["ml_peak"], "peak_measured": r["exact"]}
                       for r in results], f, indent=1)

    cnames = []
    for r in results:
        for n in r["torch"].get("compiled", {}):
            if n not in cnames:
                cnames.append(n)
    head = ["policy", "B×D×C", "PyTorch ms"] + ["torch.%s ms" % n for n in cnames]
    for label, _ in sources:
        head += ["marginloss ms (%s)" % label, "speed-up (%s)" % label]
        head += ["vs %s (%s)" % (n, label) for n in cnames]
    head += ["PyTorch peak MiB"] + ["%s peak MiB" % n for n in cnames] + ["marginloss peak MiB", "memory ratio"]
    lines = []
    for r in results:
        p, B, D, C = r["key"]
        t = r["torch"]
        comp = t.get("compiled", {})
        row = [p, shape_str(B, D, C), "%.1f" % t["ms"]]
        row += ["%.1f" % comp[n]["ms"] if n in comp else "-" for n in cnames]
        for _, rows in sources:
            b = rows.get(r["key"])
            if b is None:
                row += ["-", "-"] + ["-" for _ in cnames]
            else:
                row += ["%.1f" % b["loss_ms"], "%.2f×" % (t["ms"] / b["loss_ms"])]
                row += ["%.2f×" % (comp[n]["ms"] / b["loss_ms"]) if n in comp else "-" for n in cnames]
        tp, mp = t["peak_delta"] / MiB, r["ml_peak"] / MiB
        row += ["%.1f" % tp] + ["%.1f" % (comp[n]["peak_delta"] / MiB) if n in comp else "-" for n in cnames]
        row += [("%.1f" if r["exact"] else "~%.1f") % mp, "%.2f×" % (tp / mp) if mp > 0 else "-"]
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
        print("\nPyTorch %s, %d threads, BLAS %s; speed-up = PyTorch eager ms / marginloss ms%s; memory ratio = "
              "PyTorch eager peak / marginloss peak (peak = VmHWM during one step minus VmRSS before it)"
              % (t["torch"], t["threads"], t.get("blas"),
                 ", vs compile = torch.compile ms / marginloss ms (PyTorch's variants interleaved in one process, "
                 "marginloss from the JSON)" if cnames else " (torch.compile: not timed)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
