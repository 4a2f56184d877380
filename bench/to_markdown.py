#!/usr/bin/env python3
"""Turn marginloss_bench's JSON output into Markdown tables.

    ./marginloss_bench --benchmark_out=eigen.json --benchmark_out_format=json
    python3 bench/to_markdown.py eigen.json [blas.json ...]

One table of the loss benchmarks (policy, shape, ms, GFLOP/s, ratio = loss time / time of
the three bare products, the faster of their whole and tiled formulations, measured in the same
iterations) and one of the products alone, per
file. With --benchmark_repetitions the median aggregate is used (the run's own median of
paired ratios, medianed again over repetitions); without, the single run.
Plain python3, no dependencies.
"""

import json
import sys


def load_rows(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data.get("benchmarks", []):
        name = b.get("run_name") or b["name"]
        name = name.replace("/manual_time", "").replace("/real_time", "")
        kind = b.get("run_type", "iteration")
        if kind == "aggregate":
            if b.get("aggregate_name") != "median":
                continue
            rows[name] = b  # the median aggregate wins over single repetitions
        elif name not in rows or rows[name].get("run_type") != "aggregate":
            rows[name] = b
    return data.get("context", {}), rows


def shape_of(b):
    return "%d×%d×%d" % (int(b["B"]), int(b["D"]), int(b["C"]))


def fmt(x, digits=1):
    return "–" if x is None else ("%." + str(digits) + "f") % x


def tables(path):
    ctx, rows = load_rows(path)
    out = []
    products = ctx.get("products", "?")
    extra = []
    for key in ("eigen_simd", "eigen_threads", "openblas_core", "openblas_threads", "openblas_parallel"):
        if key in ctx:
            extra.append("%s=%s" % (key, ctx[key]))
    out.append("### %s — products: %s" % (path, products))
    out.append("")
    if extra:
        load = ctx.get("load_avg", [])
        load = ", ".join("%.2f" % v for v in load) if isinstance(load, list) else str(load)
        out.append("(" + "; ".join(extra) + "; load average at start: %s)" % (load or "?"))
        out.append("")
    out.append("| policy | B×D×C | ms | GFLOP/s | products ms (faster) | whole ms | tiled ms | ratio loss/products | workspace MiB |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, b in rows.items():
        parts = name.split("/")
        if parts[0] != "loss":
            continue
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            parts[1], shape_of(b), fmt(b["loss_ms"]), fmt(b["GFLOPs"]), fmt(b["prod_ms"]),
            fmt(b.get("whole_ms")), fmt(b.get("tiled_ms")), fmt(b["ratio"], 2), fmt(b["ws_MiB"])))
    out.append("")
    out.append("| products | B×D×C | ms | GFLOP/s |")
    out.append("|---|---|---:|---:|")
    for name, b in rows.items():
        parts = name.split("/")
        if parts[0] == "loss":
            continue
        out.append("| %s | %s | %s | %s |" % (parts[0], shape_of(b), fmt(b["prod_ms"]), fmt(b["GFLOPs"])))
    out.append("")
    return "\n".join(out)


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    print("\n".join(tables(p) for p in argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
