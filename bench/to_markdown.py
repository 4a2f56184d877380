#!/usr/bin/env python3
"""Turn marginloss_bench's JSON output into Markdown tables.

    ./marginloss_bench --benchmark_out=eigen.json --benchmark_out_format=json
    python3 bench/to_markdown.py eigen.json [blas.json ...]

One table of the loss benchmarks (policy, shape, ms, GFLOP/s, ratio = loss time / time of
the three bare products, the fastest formulation of any library (Eigen, oneDNN, BLAS; whole or
tiled), measured in the same iterations, and every formulation's time), one of the chunked
benchmarks against the dense call, and one of the products alone, per file. With --benchmark_repetitions the median aggregate is used (the run's own median of
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


def formulations(ctx, b):
    """[(key, library)] of the run: the context's "formulations" ("key:library,..."), else the
    <key>_ms counters found (older files: whole_ms, tiled_ms)."""
    listed = ctx.get("formulations")
    if listed:
        return [tuple(item.split(":", 1)) for item in listed.split(",")]
    keys = [k[:-3] for k in b if k.endswith("_ms") and k not in ("loss_ms", "prod_ms", "dense_ms")]
    return [(k, "?") for k in keys]


def tables(path):
    ctx, rows = load_rows(path)
    out = []
    products = ctx.get("products", "?")
    extra = []
    for key in ("eigen_simd", "eigen_threads", "onednn_version", "openblas_core", "openblas_threads",
                "openblas_parallel"):
        if key in ctx:
            extra.append("%s=%s" % (key, ctx[key]))
    out.append("### %s — the loss's products: %s" % (path, products))
    out.append("")
    if extra:
        load = ctx.get("load_avg", [])
        load = ", ".join("%.2f" % v for v in load) if isinstance(load, list) else str(load)
        out.append("(" + "; ".join(extra) + "; load average at start: %s)" % (load or "?"))
        out.append("")
    loss_rows = [(n, b) for n, b in rows.items() if n.split("/")[0] == "loss"]
    if loss_rows:
        forms = formulations(ctx, loss_rows[0][1])
        out.append("| policy | B×D×C | loss ms | GFLOP/s | fastest products | ms | ratio loss/fastest | "
                   + " | ".join("%s ms" % k for k, _ in forms) + " | workspace MiB |")
        out.append("|---|---|---:|---:|---|---:|---:|" + "---:|" * len(forms) + "---:|")
        for name, b in loss_rows:
            parts = name.split("/")
            fastest = forms[int(b["fastest"])][0] if "fastest" in b and int(b["fastest"]) < len(forms) else "?"
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                parts[1], shape_of(b), fmt(b["loss_ms"]), fmt(b["GFLOPs"]), fastest, fmt(b["prod_ms"]),
                fmt(b["ratio"], 2), " | ".join(fmt(b.get(k + "_ms")) for k, _ in forms), fmt(b["ws_MiB"])))
        out.append("")
    chunked = [(n, b) for n, b in rows.items() if n.split("/")[0] == "loss_chunked"]
    if chunked:
        out.append("| policy (chunked) | B×D×C | class_block | chunked ms | dense ms | ratio chunked/dense | ratio loss/fastest products |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        for name, b in chunked:
            out.append("| %s | %s | %d | %s | %s | %s | %s |" % (
                name.split("/")[1], shape_of(b), int(b.get("class_block", 0)), fmt(b["loss_ms"]),
                fmt(b.get("dense_ms")), fmt(b.get("ratio_dense"), 2), fmt(b["ratio"], 2)))
        out.append("")
    prod_rows = [(n, b) for n, b in rows.items() if n.split("/")[0] not in ("loss", "loss_chunked")]
    if prod_rows:
        out.append("| products | B×D×C | ms | GFLOP/s |")
        out.append("|---|---|---:|---:|")
        for name, b in prod_rows:
            label = "/".join(name.split("/")[:-1])
            out.append("| %s | %s | %s | %s |" % (label, shape_of(b), fmt(b["prod_ms"]), fmt(b["GFLOPs"])))
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
