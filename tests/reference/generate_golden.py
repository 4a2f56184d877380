#!/usr/bin/env python3
"""Generate the golden data files used to test marginloss against an independent
reference implementation.

Every case evaluates a margin-based normalised-softmax loss

    x̂_i = x_i / ‖x_i‖,   ŵ_j = w_j / ‖w_j‖,   c_ij = ⟨x̂_i, ŵ_j⟩
    z_ij = S_i · φ_ij,   φ_{i,y_i} = f(c_{i,y_i}),   φ_ij = c_ij (j ≠ y_i)
    L    = mean_i [ logsumexp_j z_ij − z_{i,y_i} ] + R

(the mining policies replace φ_ij = c_ij by h(c_ij) for the "hard" non-targets, those with
c_ij > T_i for a row threshold T_i; the mask is a constant for differentiation. R = 0 except
for AdaM-Softmax, f_i(t) = t − m_{y_i} with a learnable margin per class and the regulariser
R = −λ · mean_{j∈J} m_j; its dL/dm is taken by autograd as well)

in float64 with PyTorch and takes dL/dX and dL/dW (w.r.t. the RAW, un-normalised X and W)
from torch.autograd. No gradient is written by hand, and the target transforms are built
on the arccos route (θ = acos t, then cos of the shifted / multiplied angle), which is a
different evaluation route from the closed forms a C++ implementation typically uses
(t·cos m − √(1−t²)·sin m for ArcFace, Chebyshev polynomials for SphereFace).
See docs/formulas.md sections 1–6 and 9 for the specification, and README.md beside this
file for the file format.

Run from the repository root:

    python3 tests/reference/generate_golden.py

It (re)writes every file in tests/reference/golden/. The output is deterministic: all
inputs come from a splitmix64 stream with fixed seeds and torch runs single-threaded.
"""

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)  # fixed reduction order => the same bytes on every run

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
HEADER = "marginloss-golden 1"
NUMBERS_PER_LINE = 8
# splitmix64 (large) cases store only the dW rows of the batch's labels and every
# DW_ROW_STRIDE-th row, to keep the files small; inline cases store every row.
DW_ROW_STRIDE = 32
MASK64 = (1 << 64) - 1

# Minimum distance between any target cosine and a branch switch of its policy, and
# the largest |cosine| allowed anywhere (the loss is not differentiable at a switch, and
# arccos is not differentiable at ±1).
SWITCH_MARGIN = 1e-4
MAX_ABS_COS = 1.0 - 1e-6


# --------------------------------------------------------------------------------------
# Random numbers: splitmix64 (exactly reproducible in C++)
# --------------------------------------------------------------------------------------
class SplitMix64:
    """splitmix64 with 64-bit integer arithmetic; uniform() = (next() >> 11) · 2^-53."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next() >> 11) * (2.0 ** -53)

    def uniform_in(self, lo, hi):
        return lo + (hi - lo) * self.uniform()


def splitmix64_inputs(seed, B, D, C, with_margins=False):
    """Inputs of an `inputs splitmix64 <seed>` case: X row-major, then W row-major, each
    element 2·uniform() − 1, then the labels, each next() mod C; with_margins (adaptive):
    then the C class margins, each 0.3 + 0.1·uniform(). Returns (X, W, labels, margins),
    margins None without with_margins."""
    rng = SplitMix64(seed)
    X = [2.0 * rng.uniform() - 1.0 for _ in range(B * D)]
    W = [2.0 * rng.uniform() - 1.0 for _ in range(C * D)]
    labels = [rng.next() % C for _ in range(B)]
    margins = [0.3 + 0.1 * rng.uniform() for _ in range(C)] if with_margins else None
    return X, W, labels, margins


def inline_margins(seed, C, labels, at_label=(), at_absent=()):
    """Class margins of an inline adaptive case: each 0.3 + 0.1·uniform() from its own
    splitmix64 stream (state = seed), then overrides at the projection bounds 0 and 1:
    at_label (i, v) sets the margin of sample i's class to v, at_absent (k, v) the margin
    of the k-th class (ascending) that is nobody's label."""
    rng = SplitMix64(seed)
    margins = [0.3 + 0.1 * rng.uniform() for _ in range(C)]
    absent = [j for j in range(C) if j not in set(labels)]
    for i, v in at_label:
        margins[labels[i]] = v
    for k, v in at_absent:
        margins[absent[k]] = v
    return margins


# --------------------------------------------------------------------------------------
# Constructed inputs with prescribed target cosines (pure Python arithmetic + sqrt only)
# --------------------------------------------------------------------------------------
def _dot(a, b):
    s = 0.0
    for u, v in zip(a, b):
        s += u * v
    return s


def _unit(v):
    n = math.sqrt(_dot(v, v))
    return [e / n for e in v]


def constructed_inputs(seed, B, D, C, targets, probes=()):
    """Random inputs in which sample i has target cosine targets[i] (None: leave random).

    Feature norms vary in [0.5, 5] and weight norms in [0.5, 2]; the labels are B distinct
    classes, so every constructed weight row belongs to exactly one sample. The target row
    is w_y = r·(t·x̂ + √(1−t²)·u) with u a unit vector orthogonal to x̂ (Gram–Schmidt).

    probes: (i, c) pairs; the k-th one sets the k-th class that is nobody's label to a row
    with cosine c to sample i (same construction). Its cosines to the other samples stay
    random. The random numbers it uses come after all others, so cases without probes are
    unaffected."""
    assert len(targets) == B and B <= C
    rng = SplitMix64(seed)

    def direction():
        return _unit([2.0 * rng.uniform() - 1.0 for _ in range(D)])

    X = []
    for _ in range(B):
        r = rng.uniform_in(0.5, 5.0)
        X.append([r * e for e in direction()])
    W = []
    for _ in range(C):
        r = rng.uniform_in(0.5, 2.0)
        W.append([r * e for e in direction()])

    # Distinct labels: the first B entries of a Fisher–Yates shuffle of 0..C−1.
    perm = list(range(C))
    for i in range(C - 1, 0, -1):
        j = rng.next() % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    labels = perm[:B]

    def row_with_cosine(i, t):
        xh = _unit(X[i])
        v = [2.0 * rng.uniform() - 1.0 for _ in range(D)]
        p = _dot(v, xh)
        u = _unit([a - p * b for a, b in zip(v, xh)])
        r = rng.uniform_in(0.5, 2.0)
        st = math.sqrt(1.0 - t * t)
        return [r * (t * a + st * b) for a, b in zip(xh, u)]

    for i, t in enumerate(targets):
        if t is None:
            continue
        W[labels[i]] = row_with_cosine(i, t)

    assert len(probes) <= C - B
    for k, (i, cv) in enumerate(probes):
        W[perm[B + k]] = row_with_cosine(i, cv)

    return [e for row in X for e in row], [e for row in W for e in row], labels


def spread_targets(m, B, seed):
    """B target cosines covering every SphereFace piece k = 0..m−1 (sample i lies in piece
    i mod m, at a random interior fraction of it), rounded to 6 decimals."""
    rng = SplitMix64(seed)
    out = []
    for i in range(B):
        k = i % m
        frac = rng.uniform_in(0.15, 0.85)
        out.append(round(math.cos((k + frac) * math.pi / m), 6))
    return out


# --------------------------------------------------------------------------------------
# Policies: target transform f and the branch switches to keep away from
# --------------------------------------------------------------------------------------
def straight_through(t, value):
    """Forward value `value`, derivative w.r.t. t taken as 1."""
    return t + (value - t).detach()


def target_transform(name, p, t, m_y=None):
    """φ for the target cosines t (1-D tensor); returns a tensor in the autograd graph.
    m_y (adaptive only): the margins of the samples' classes, a tensor in the graph."""
    if name == "normface":
        return t

    if name == "adaptive":
        return t - m_y  # AdaM-Softmax: CosFace with the margin of the sample's class

    if name == "cosface":
        m = p["m"]
        if p["conditional"] == 1:
            # Official AM-Softmax Caffe layer: subtract m only where t > m.
            return torch.where(t.detach() > m, t - m, t)
        return t - m

    if name == "arcface":
        m = p["m"]
        theta = torch.acos(t)
        arc = torch.cos(theta + m)
        fb = p["fallback"]
        if fb == "hard":
            val = torch.where(t.detach() > math.cos(math.pi - m), arc, t - m * math.sin(m))
        elif fb == "easy":
            val = torch.where(t.detach() > 0.0, arc, t)
        elif fb == "none":
            val = arc
        else:
            raise ValueError(fb)
        return straight_through(t, val) if p["gradient"] == "straight_through" else val

    if name == "combined":
        m1, m2, m3 = p["m1"], p["m2"], p["m3"]
        theta = torch.acos(t)
        val = torch.cos(m1 * theta + m2) - m3
        fb = p["fallback"]
        if fb == "hard":
            beyond = (m1 * theta.detach() + m2) > math.pi
            val = torch.where(beyond, t - m2 * math.sin(m2) - m3, val)
        elif fb != "none":
            raise ValueError(fb)
        return straight_through(t, val) if p["gradient"] == "straight_through" else val

    if name == "sphereface":
        m, lam = p["m"], p["lambda"]
        theta = torch.acos(t)
        with torch.no_grad():
            k = torch.floor(m * theta / math.pi).clamp(0, m - 1)
            sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (−1)^k
        psi = sign * torch.cos(m * theta) - 2.0 * k
        return (lam * t + psi) / (1.0 + lam)

    if name in MINING_POLICIES:
        if mining_target(name, p) == "am":
            m, fb = p["m"], p["fallback"]
            if p.get("conditional", 0) == 1:
                # FaceX-Zoo MV-AM: subtract m only where t > m (not combined with easy).
                assert fb == "none", "conditional=1 is not combined with a fallback"
                return torch.where(t.detach() > m, t - m, t)
            if fb == "easy":
                # Official MV code's easy margin: subtract m only where t > 0.
                return torch.where(t.detach() > 0.0, t - m, t)
            if fb != "none":
                raise ValueError(fb)
            return t - m
        assert p.get("conditional", 0) == 0, "conditional=1 applies to target=am only"
        return target_transform("arcface", arc_params(p), t)

    raise ValueError(name)


# --------------------------------------------------------------------------------------
# Mining policies: the non-target transform of the hard non-targets
# --------------------------------------------------------------------------------------
MINING_POLICIES = ("svsoftmax", "mvsoftmax", "curricularface", "ammsoftmax")


def mining_target(name, p):
    """"am" (f = t − m) or "arc" (f = cos(θ + m)) for a mining policy."""
    if name in ("svsoftmax", "mvsoftmax"):
        return p["target"]
    return "arc"  # CurricularFace, AMM-Softmax


def arc_params(p):
    """The arcface parameters of a mining policy's ArcFace target (exact gradient)."""
    return dict(s=p["s"], m=p["m"], fallback=p["fallback"], gradient="exact")


def mining_threshold(name, p, t):
    """Row threshold T_i of the hardness mask from the raw target cosines (no fallback):
    t − m for an AM target, cos(θ + m) for an Arc target. Computed on detached values."""
    with torch.no_grad():
        t = t.detach()
        if mining_target(name, p) == "am":
            return t - p["m"]
        return torch.cos(torch.acos(t) + p["m"])


def hard_transform(name, p, c):
    """h(c) for the hard non-targets (c: tensor in the autograd graph)."""
    if name == "svsoftmax" or (name == "mvsoftmax" and p["variant"] == "adaptive"):
        tv = p["t"]
        return tv * c + (tv - 1.0)  # SV-Softmax h*(t, θ) = t·cos θ + t − 1
    if name == "mvsoftmax":
        if p["variant"] != "fixed":
            raise ValueError(p["variant"])
        return c + (p["t"] - 1.0)
    if name == "curricularface":
        return c * (p["tau"] + c)  # τ: a constant of the call
    if name == "ammsoftmax":
        # The hard non-target's angle shrunk by m_h, not below 0.
        return torch.cos(torch.clamp_min(torch.acos(c) - p["m_h"], 0.0))
    raise ValueError(name)


def hard_mask(name, p, c, t, onehot):
    """Hard non-targets: c_ij > T_i (strict), j ≠ y_i. A constant (no gradient)."""
    with torch.no_grad():
        T = mining_threshold(name, p, t)
        return (c.detach() > T[:, None]) & ~onehot


def nontarget_transform(name, p, c, t, onehot, hard_fn=None):
    """φ for the non-target entries (the target entries are overwritten by the caller).
    Policies without mining return c itself. hard_fn replaces hard_transform (used only
    to check the official code's increment parameterisation)."""
    if name not in MINING_POLICIES:
        return c
    h = hard_fn(c) if hard_fn is not None else hard_transform(name, p, c)
    return torch.where(hard_mask(name, p, c, t, onehot), h, c)


def branch_switches(name, p):
    """Target cosines at which f switches branch (inputs must keep away from them)."""
    if name == "cosface" and p["conditional"] == 1:
        return [p["m"]]
    if name == "arcface":
        return {"hard": [math.cos(math.pi - p["m"])], "easy": [0.0], "none": []}[p["fallback"]]
    if name == "combined" and p["fallback"] == "hard":
        theta_switch = (math.pi - p["m2"]) / p["m1"]
        return [math.cos(theta_switch)] if 0.0 <= theta_switch <= math.pi else []
    if name == "sphereface":
        m = p["m"]
        return [math.cos(j * math.pi / m) for j in range(1, m)]
    if name in MINING_POLICIES:
        if mining_target(name, p) == "arc":
            return branch_switches("arcface", arc_params(p))
        if p.get("conditional", 0) == 1:
            return [p["m"]]
        return {"easy": [0.0], "none": []}[p["fallback"]]
    return []


def uses_feature_norm(name, p):
    return name == "sphereface" and p["scale"] == "feature_norm"


# --------------------------------------------------------------------------------------
# The loss and its gradients
# --------------------------------------------------------------------------------------
def cosines(X, W):
    xh = X / X.norm(dim=1, keepdim=True)
    wh = W / W.norm(dim=1, keepdim=True)
    return xh @ wh.t()  # not clamped: inputs keep |c| < 1 − 1e-6


def regulariser(name, p, margins, labels):
    """R of the loss: 0, except AdaM-Softmax's R = −λ · mean_{j∈J} m_j, J = all C classes
    (scope=all) or the distinct labels of the batch (scope=batch)."""
    if name != "adaptive":
        return 0.0
    if p["scope"] == "all":
        used = margins
    elif p["scope"] == "batch":
        used = margins[torch.unique(labels)]
    else:
        raise ValueError(p["scope"])
    return -p["lambda"] * used.mean()


def margin_loss(name, p, X, W, labels, hard_fn=None, margins=None):
    """Loss for raw X (B×D), W (C×D), labels (B,) and, for adaptive, the class margins
    (C,), all inside the autograd graph."""
    c = cosines(X, W)
    onehot = F.one_hot(labels, c.shape[1]).bool()
    t = c.gather(1, labels[:, None]).squeeze(1)
    phi_t = target_transform(name, p, t, margins[labels] if margins is not None else None)
    phi_n = nontarget_transform(name, p, c, t, onehot, hard_fn)
    phi = torch.where(onehot, phi_t[:, None].expand_as(c), phi_n)
    if uses_feature_norm(name, p):
        S = X.norm(dim=1, keepdim=True)  # raw feature norm, differentiated through
    else:
        S = p["s"]
    z = S * phi
    ce = F.cross_entropy(z, labels, reduction="mean")
    if name == "adaptive":
        return ce + regulariser(name, p, margins, labels)
    return ce


def loss_and_grads(name, p, X, W, labels, hard_fn=None, margins=None):
    """(L, dL/dX, dL/dW, dL/dm) in float64 via autograd. X, W, margins: nested lists or
    tensors; margins (adaptive only) is a leaf of the graph, dL/dm is None without it."""
    X = torch.as_tensor(X, dtype=torch.float64).clone().requires_grad_(True)
    W = torch.as_tensor(W, dtype=torch.float64).clone().requires_grad_(True)
    y = torch.as_tensor(labels, dtype=torch.int64)
    if margins is None:
        L = margin_loss(name, p, X, W, y, hard_fn)
        dX, dW = torch.autograd.grad(L, (X, W))
        return L.item(), dX, dW, None
    m = torch.as_tensor(margins, dtype=torch.float64).clone().requires_grad_(True)
    L = margin_loss(name, p, X, W, y, hard_fn, m)
    dX, dW, dm = torch.autograd.grad(L, (X, W, m))
    return L.item(), dX, dW, dm


def check_inputs(case, X, W, labels):
    """Every |c| < 1 − 1e-6 and every target cosine ≥ SWITCH_MARGIN from a switch."""
    with torch.no_grad():
        c = cosines(X, W)
        assert c.abs().max().item() < MAX_ABS_COS, (case["file"], "a cosine is too close to ±1")
        t = c.gather(1, torch.as_tensor(labels)[:, None]).squeeze(1)
        for sw in branch_switches(case["policy"], case["params"]):
            d = (t - sw).abs().min().item()
            assert d > SWITCH_MARGIN, (case["file"], "target within %g of switch %r" % (d, sw))


def check_mining(case, X, W, labels):
    """Every non-target cosine ≥ SWITCH_MARGIN from its row's mask threshold (and, for
    AMM-Softmax, every non-target angle ≥ SWITCH_MARGIN from m_h); both hard and easy
    non-targets present. Returns (#hard, #easy)."""
    name, p = case["policy"], case["params"]
    with torch.no_grad():
        c = cosines(X, W)
        y = torch.as_tensor(labels)
        onehot = F.one_hot(y, c.shape[1]).bool()
        t = c.gather(1, y[:, None]).squeeze(1)
        T = mining_threshold(name, p, t)
        gap = (c - T[:, None])[~onehot]
        d = gap.abs().min().item()
        assert d > SWITCH_MARGIN, (case["file"], "non-target within %g of its threshold" % d)
        if name == "ammsoftmax":
            d = (torch.acos(c[~onehot]) - p["m_h"]).abs().min().item()
            assert d > SWITCH_MARGIN, (case["file"], "non-target angle within %g of m_h" % d)
        n_hard = int(hard_mask(name, p, c, t, onehot).sum())
        n_easy = int((~onehot).sum()) - n_hard
    assert n_hard > 0 and n_easy > 0, (case["file"], "needs hard and easy non-targets", n_hard, n_easy)
    return n_hard, n_easy


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------
# Parameter order on the `policy` line, per policy.
PARAM_KEYS = {
    "normface": ["s"],
    "cosface": ["s", "m", "conditional"],
    "arcface": ["s", "m", "fallback", "gradient"],
    "combined": ["s", "m1", "m2", "m3", "fallback", "gradient"],
    "sphereface": ["m", "lambda", "scale", "s"],
    "svsoftmax": ["s", "m", "t", "target", "fallback"],
    "mvsoftmax": ["s", "m", "t", "target", "variant", "fallback", "conditional"],
    "curricularface": ["s", "m", "tau", "fallback"],
    "ammsoftmax": ["s", "m", "m_h", "fallback"],
    "adaptive": ["s", "lambda", "scope"],
}

CASES = []


def case(file, policy, shape, inputs, increment=None, share=(), margins=None, **params):
    """Register one case. inputs: ("splitmix64", seed) or ("constructed", seed, targets
    [, probes]). increment (mvsoftmax only): also evaluate the hard non-targets in the
    official code's increment form with t' = increment and require the same numbers.
    share (adaptive, constructed only): (i, k) pairs, sample i takes the label of sample k
    after the construction (repeated labels; sample i's target cosine is then random).
    margins (adaptive, constructed only): (seed, at_label, at_absent) for inline_margins."""
    assert set(params) == set(PARAM_KEYS[policy]), (file, sorted(params))
    if policy == "adaptive":
        assert (inputs[0] == "splitmix64") == (margins is None), file
    else:
        assert not share and margins is None, file
    CASES.append(dict(file=file, policy=policy, params=params, shape=shape, inputs=inputs,
                      increment=increment, share=list(share), margins=margins))


def constructed(seed, targets, probes=()):
    return ("constructed", seed, list(targets), list(probes))


def mining_probes(name, p, targets, extra=()):
    """Non-target probes (i, c) for a mining case: per sample, one non-target just above or
    just below (alternating) its row threshold T_i, at 2e-3..4e-3; then, where the target
    value f(t_i) differs from T_i (fallbacks, conditional margin), one between the two (its
    hardness tells the raw threshold from the fallback value); then `extra`. For the
    8×16×20 shape (at most C − B = 12 probes)."""
    B, _, C = SHAPE_SMALL
    tt = torch.tensor(targets)
    T = mining_threshold(name, p, tt).tolist()
    f = target_transform(name, p, tt).tolist()
    probes = []
    for i, Ti in enumerate(T):
        delta = 0.002 + 0.001 * (i % 3)
        for sign in ((1.0, -1.0) if i % 2 == 0 else (-1.0, 1.0)):
            if abs(Ti + sign * delta) < 0.999:
                probes.append((i, Ti + sign * delta))
                break
    room = C - B - len(extra)
    for i, (fi, Ti) in enumerate(zip(f, T)):
        lo, hi = max(min(fi, Ti), -0.9999), min(max(fi, Ti), 0.9999)
        if hi - lo > 2e-3 and len(probes) < room:
            probes.append((i, 0.5 * (lo + hi)))
    probes += list(extra)
    assert len(probes) <= C - B
    return probes


T_ANY8 = [0.82, -0.47, 0.31, 0.05, -0.12, 0.66, -0.78, 0.24]
# ArcFace m=0.5: hard switch at cos(π−0.5) = −0.8776, easy switch at 0; both sides of each.
T_ARC50 = [0.95, 0.6, 0.1, -0.3, -0.8, -0.95, 0.35, -0.6]
# ArcFace m=0.35: hard switch at −0.9394.
T_ARC35 = [0.9, 0.5, 0.05, -0.2, -0.7, -0.92, -0.96, -0.99]
# Targets close to ±1 (the arccos slope grows like 1/sin θ there).
T_NEAR1 = [0.9999, 0.99999, -0.9999, -0.99999, 0.999, 0.4, -0.2, -0.7]
# CosFace conditional (AM-Softmax Caffe), switch at t = m = 0.35.
T_COND35 = [0.9, 0.6, 0.36, 0.34, 0.2, -0.1, -0.5, 0.45]
# Combined margins, targets on both sides of θ = (π − m2)/m1.
T_CM1 = [0.9, 0.5, 0.1, -0.4, -0.8, -0.94, -0.97, -0.995]  # (1, 0.3, 0.2): switch −0.9553
T_CM2 = [0.9, 0.5, 0.0, -0.5, -0.9, -0.99, -0.998, -0.9995]  # (0.9, 0.4, 0.15): −0.9955
T_CM3 = [0.95, 0.6, 0.2, -0.2, -0.42, -0.47, -0.7, -0.95]  # (1.5, 0.1, 0.05): −0.4412

SHAPE_SMALL = (8, 16, 20)
SHAPE_LARGE = (64, 128, 1000)

# ---- NormFace
case("normface_s16_1x3x2.txt", "normface", (1, 3, 2), constructed(101, [0.3]), s=16)
case("normface_s16_3x4x5.txt", "normface", (3, 4, 5), constructed(102, [0.7, -0.4, 0.1]), s=16)
case("normface_s16_8x16x20.txt", "normface", SHAPE_SMALL, constructed(103, T_ANY8), s=16)
case("normface_s16_64x128x1000.txt", "normface", SHAPE_LARGE, ("splitmix64", 0x5EED000000000001), s=16)

# ---- CosFace / AM-Softmax
case("cosface_s30_m0.35_1x3x2.txt", "cosface", (1, 3, 2), constructed(201, [0.5]),
     s=30, m=0.35, conditional=0)
case("cosface_s30_m0.35_3x4x5.txt", "cosface", (3, 4, 5), constructed(202, [0.8, 0.2, -0.6]),
     s=30, m=0.35, conditional=0)
case("cosface_s30_m0.35_8x16x20.txt", "cosface", SHAPE_SMALL, constructed(203, T_COND35),
     s=30, m=0.35, conditional=0)
case("cosface_s30_m0.35_conditional_3x4x5.txt", "cosface", (3, 4, 5),
     constructed(204, [0.8, 0.2, -0.6]), s=30, m=0.35, conditional=1)
case("cosface_s30_m0.35_conditional_8x16x20_crossing.txt", "cosface", SHAPE_SMALL,
     constructed(205, T_COND35), s=30, m=0.35, conditional=1)
case("cosface_s64_m0.4_8x16x20.txt", "cosface", SHAPE_SMALL, constructed(206, T_ANY8),
     s=64, m=0.4, conditional=0)
case("cosface_s64_m0.4_64x128x1000.txt", "cosface", SHAPE_LARGE, ("splitmix64", 0x5EED000000000002),
     s=64, m=0.4, conditional=0)

# ---- ArcFace
case("arcface_hard_exact_1x3x2.txt", "arcface", (1, 3, 2), constructed(301, [-0.2]),
     s=64, m=0.5, fallback="hard", gradient="exact")
case("arcface_hard_exact_3x4x5_crossing.txt", "arcface", (3, 4, 5),
     constructed(302, [0.7, -0.8, -0.95]), s=64, m=0.5, fallback="hard", gradient="exact")
for i, fb in enumerate(["hard", "easy", "none"]):
    for j, gm in enumerate(["exact", "straight_through"]):
        case("arcface_%s_%s_8x16x20_crossing.txt" % (fb, gm), "arcface", SHAPE_SMALL,
             constructed(310 + 2 * i + j, T_ARC50), s=64, m=0.5, fallback=fb, gradient=gm)
case("arcface_s32_m0.35_hard_exact_8x16x20_crossing.txt", "arcface", SHAPE_SMALL,
     constructed(320, T_ARC35), s=32, m=0.35, fallback="hard", gradient="exact")
case("arcface_s32_m0.35_none_exact_8x16x20.txt", "arcface", SHAPE_SMALL,
     constructed(321, T_ARC35), s=32, m=0.35, fallback="none", gradient="exact")
case("arcface_none_exact_8x16x20_near_pm1.txt", "arcface", SHAPE_SMALL,
     constructed(322, T_NEAR1), s=64, m=0.5, fallback="none", gradient="exact")
case("arcface_hard_exact_8x16x20_near_pm1.txt", "arcface", SHAPE_SMALL,
     constructed(323, T_NEAR1), s=64, m=0.5, fallback="hard", gradient="exact")
case("arcface_easy_exact_8x16x20_near_pm1.txt", "arcface", SHAPE_SMALL,
     constructed(324, T_NEAR1), s=64, m=0.5, fallback="easy", gradient="exact")
case("arcface_hard_exact_64x128x1000.txt", "arcface", SHAPE_LARGE, ("splitmix64", 0x5EED000000000003),
     s=64, m=0.5, fallback="hard", gradient="exact")
case("arcface_none_straight_through_64x128x1000.txt", "arcface", SHAPE_LARGE,
     ("splitmix64", 0x5EED000000000004), s=64, m=0.5, fallback="none", gradient="straight_through")

# ---- Combined margin cos(m1·θ + m2) − m3
for tag, (s, m1, m2, m3), targets, seed in [
    ("s64_1_0.3_0.2", (64, 1, 0.3, 0.2), T_CM1, 400),
    ("s64_0.9_0.4_0.15", (64, 0.9, 0.4, 0.15), T_CM2, 410),
    ("s30_1.5_0.1_0.05", (30, 1.5, 0.1, 0.05), T_CM3, 420),
]:
    for k, fb in enumerate(["none", "hard"]):
        case("combined_%s_%s_exact_8x16x20_crossing.txt" % (tag, fb), "combined", SHAPE_SMALL,
             constructed(seed + k, targets), s=s, m1=m1, m2=m2, m3=m3, fallback=fb, gradient="exact")
    case("combined_%s_hard_straight_through_8x16x20_crossing.txt" % tag, "combined", SHAPE_SMALL,
         constructed(seed + 2, targets), s=s, m1=m1, m2=m2, m3=m3, fallback="hard",
         gradient="straight_through")
case("combined_s64_1_0.3_0.2_hard_exact_3x4x5.txt", "combined", (3, 4, 5),
     constructed(430, [0.6, -0.5, -0.97]), s=64, m1=1, m2=0.3, m3=0.2, fallback="hard", gradient="exact")
case("combined_s64_1_0.3_0.2_hard_exact_64x128x1000.txt", "combined", SHAPE_LARGE,
     ("splitmix64", 0x5EED000000000005), s=64, m1=1, m2=0.3, m3=0.2, fallback="hard", gradient="exact")

# ---- SphereFace / A-Softmax (every m, λ ∈ {0, 5}, both scale modes; every k piece hit)
for m in range(1, 6):
    for lam in (0, 5):
        for scale in ("feature_norm", "fixed"):
            seed = 500 + 10 * m + (lam > 0) * 2 + (scale == "fixed")
            case("sphereface_m%d_lambda%d_%s_8x16x20.txt" % (m, lam, scale), "sphereface", SHAPE_SMALL,
                 constructed(seed, spread_targets(m, 8, seed)), m=m, **{"lambda": lam}, scale=scale, s=30)
case("sphereface_m4_lambda0_feature_norm_8x16x20_near_pm1.txt", "sphereface", SHAPE_SMALL,
     constructed(570, T_NEAR1), m=4, **{"lambda": 0}, scale="feature_norm", s=30)
case("sphereface_m4_lambda5_feature_norm_1x3x2.txt", "sphereface", (1, 3, 2),
     constructed(571, [-0.3]), m=4, **{"lambda": 5}, scale="feature_norm", s=30)
case("sphereface_m3_lambda5_fixed_3x4x5.txt", "sphereface", (3, 4, 5),
     constructed(572, [0.8, -0.1, -0.9]), m=3, **{"lambda": 5}, scale="fixed", s=30)
case("sphereface_m4_lambda5_feature_norm_64x128x1000.txt", "sphereface", SHAPE_LARGE,
     ("splitmix64", 0x5EED000000000006), m=4, **{"lambda": 5}, scale="feature_norm", s=30)
case("sphereface_m3_lambda0_fixed_64x128x1000.txt", "sphereface", SHAPE_LARGE,
     ("splitmix64", 0x5EED000000000007), m=3, **{"lambda": 0}, scale="fixed", s=30)


# ---- Mining policies (hard non-targets: c_ij > T_i). The small cases construct the
# targets and, with mining_probes, non-targets just above / below each row's threshold.
# In the splitmix64 cases the targets are ≈ 0 (D = 128), so T_i ≈ −m: most non-targets are
# hard and the easy ones are the tail below −m; their seeds are chosen so that both kinds
# occur and no non-target lies within SWITCH_MARGIN of its threshold.
def mining_case(file, policy, seed, targets, extra=(), increment=None, **params):
    probes = mining_probes(policy, params, targets, extra)
    case(file, policy, SHAPE_SMALL, constructed(seed, targets, probes), increment=increment, **params)


# m = 0.35: AM-conditional switch 0.35, easy-margin switch 0, Arc hard switch −0.9394; both
# sides of each.
T_MINE35 = [0.92, 0.6, 0.4, 0.3, 0.1, -0.15, -0.55, -0.96]
# m = 0.5: Arc hard switch −0.8776, easy switch 0.
T_MINE50 = [0.95, 0.7, 0.45, 0.2, -0.1, -0.4, -0.75, -0.93]

# SV-Softmax (paper: s = 30, t = 1.2; m = 0 is the original, AM 0.35 / Arc 0.5 the SV-X forms)
mining_case("svsoftmax_s30_m0_t1.2_am_none_8x16x20.txt", "svsoftmax", 601, T_MINE35,
            s=30, m=0, t=1.2, target="am", fallback="none")
mining_case("svsoftmax_s30_m0.35_t1.2_am_none_8x16x20.txt", "svsoftmax", 602, T_MINE35,
            s=30, m=0.35, t=1.2, target="am", fallback="none")
mining_case("svsoftmax_s30_m0.5_t1.2_arc_hard_8x16x20_crossing.txt", "svsoftmax", 603, T_MINE50,
            s=30, m=0.5, t=1.2, target="arc", fallback="hard")
case("svsoftmax_s30_m0.35_t1.2_am_none_64x128x1000.txt", "svsoftmax", SHAPE_LARGE,
     ("splitmix64", 0x5EED00000000000D), s=30, m=0.35, t=1.2, target="am", fallback="none")

# MV-Softmax (s = 32, m = 0.35). Official code: t' = 0.2 (t = 1.2), easy margin on by
# default; FaceX-Zoo: t = 1.12, AM target with the conditional margin, Arc with easy margin.
for k, (tg, var) in enumerate([("am", "adaptive"), ("am", "fixed"), ("arc", "adaptive"), ("arc", "fixed")]):
    mining_case("mvsoftmax_%s_%s_t1.2_easy_8x16x20_crossing.txt" % (tg, var), "mvsoftmax", 610 + k,
                T_MINE35, increment=0.2 if k == 0 else None,
                s=32, m=0.35, t=1.2, target=tg, variant=var, fallback="easy", conditional=0)
mining_case("mvsoftmax_am_adaptive_t1.12_conditional_8x16x20_crossing.txt", "mvsoftmax", 614, T_MINE35,
            s=32, m=0.35, t=1.12, target="am", variant="adaptive", fallback="none", conditional=1)
mining_case("mvsoftmax_arc_adaptive_t1.12_easy_8x16x20_crossing.txt", "mvsoftmax", 615, T_MINE35,
            s=32, m=0.35, t=1.12, target="arc", variant="adaptive", fallback="easy", conditional=0)
mining_case("mvsoftmax_arc_adaptive_t1.2_hard_8x16x20_crossing.txt", "mvsoftmax", 616, T_MINE35,
            s=32, m=0.35, t=1.2, target="arc", variant="adaptive", fallback="hard", conditional=0)
case("mvsoftmax_arc_adaptive_t1.2_easy_64x128x1000.txt", "mvsoftmax", SHAPE_LARGE,
     ("splitmix64", 0x5EED00000000001D), s=32, m=0.35, t=1.2, target="arc", variant="adaptive",
     fallback="easy", conditional=0)

# CurricularFace (s = 64, m = 0.5), τ given per call.
for k, (tau, fb) in enumerate([("0", "hard"), ("0.3", "hard"), ("0.6", "hard"), ("0.3", "easy")]):
    mining_case("curricularface_s64_m0.5_tau%s_%s_8x16x20_crossing.txt" % (tau, fb),
                "curricularface", 620 + k, T_MINE50, s=64, m=0.5, tau=float(tau), fallback=fb)
case("curricularface_s64_m0.5_tau0.3_hard_64x128x1000.txt", "curricularface", SHAPE_LARGE,
     ("splitmix64", 0x5EED00000000000A), s=64, m=0.5, tau=0.3, fallback="hard")

# AMM-Softmax (reconstruction; s = 64, m = 0.5, m_h = 0.1). One probe per case has
# θ_ij = m_h/2 < m_h (the clamped branch, h = 1).
for k, (mh, fb) in enumerate([(0.1, "hard"), (0.3, "hard"), (0.1, "easy")]):
    mining_case("ammsoftmax_s64_m0.5_mh%s_%s_8x16x20_crossing.txt" % (mh, fb), "ammsoftmax",
                640 + k, T_MINE50, extra=[(1, math.cos(0.5 * mh))], s=64, m=0.5, m_h=mh, fallback=fb)
case("ammsoftmax_s64_m0.4_mh0.1_hard_64x128x1000.txt", "ammsoftmax", SHAPE_LARGE,
     ("splitmix64", 0x5EED00000000000E), s=64, m=0.4, m_h=0.1, fallback="hard")

# ---- AdaM-Softmax (AdaptiveFace): a learnable margin per class, R = −λ · mean_{j∈J} m_j.
# FaceX-Zoo: s = 30 (s = 32 in its training config), λ = 70. Margins in [0.3, 0.4], some at
# the projection bounds 0 and 1, both for classes in the batch and for absent ones.
# "repeated": some samples share a class (SHARE8: classes with 3, 2, 1, 1, 1 samples).
SHARE8 = [(1, 0), (2, 0), (5, 3)]
MARGINS_DISTINCT = dict(at_label=[(1, 0.0), (4, 1.0)], at_absent=[(0, 0.0), (3, 1.0)])
MARGINS_REPEATED = dict(at_label=[(0, 1.0), (6, 0.0)], at_absent=[(2, 0.0), (5, 1.0)])


def adaptive_case(file, shape, seed, targets, share=(), at_label=(), at_absent=(), **params):
    case(file, "adaptive", shape, constructed(seed, targets), share=share,
         margins=(seed + 100, list(at_label), list(at_absent)), **params)


adaptive_case("adaptive_s30_lambda70_all_1x3x2.txt", (1, 3, 2), 701, [-0.6],
              at_absent=[(0, 0.0)], s=30, **{"lambda": 70}, scope="all")
adaptive_case("adaptive_s30_lambda70_batch_1x3x2.txt", (1, 3, 2), 702, [-0.2],
              at_absent=[(0, 1.0)], s=30, **{"lambda": 70}, scope="batch")
adaptive_case("adaptive_s30_lambda70_all_3x4x5_repeated.txt", (3, 4, 5), 703, [0.8, 0.2, -0.6],
              share=[(2, 0)], at_label=[(1, 0.0)], at_absent=[(0, 1.0)],
              s=30, **{"lambda": 70}, scope="all")
adaptive_case("adaptive_s30_lambda70_batch_3x4x5_repeated.txt", (3, 4, 5), 704, [0.8, 0.2, -0.6],
              share=[(2, 0)], at_label=[(0, 1.0)], at_absent=[(1, 0.0)],
              s=30, **{"lambda": 70}, scope="batch")
for k, scope in enumerate(["all", "batch"]):
    adaptive_case("adaptive_s30_lambda70_%s_8x16x20.txt" % scope, SHAPE_SMALL, 705 + k, T_ANY8,
                  **MARGINS_DISTINCT, s=30, **{"lambda": 70}, scope=scope)
    adaptive_case("adaptive_s30_lambda70_%s_8x16x20_repeated.txt" % scope, SHAPE_SMALL, 707 + k,
                  T_ANY8, share=SHARE8, **MARGINS_REPEATED, s=30, **{"lambda": 70}, scope=scope)
adaptive_case("adaptive_s32_lambda70_all_8x16x20_repeated.txt", SHAPE_SMALL, 709, T_ANY8,
              share=SHARE8, **MARGINS_REPEATED, s=32, **{"lambda": 70}, scope="all")
adaptive_case("adaptive_s30_lambda7_batch_8x16x20_repeated.txt", SHAPE_SMALL, 710, T_ANY8,
              share=SHARE8, **MARGINS_REPEATED, s=30, **{"lambda": 7}, scope="batch")
case("adaptive_s30_lambda70_all_64x128x1000.txt", "adaptive", SHAPE_LARGE,
     ("splitmix64", 0x5EED00000000000F), s=30, **{"lambda": 70}, scope="all")
case("adaptive_s32_lambda70_batch_64x128x1000.txt", "adaptive", SHAPE_LARGE,
     ("splitmix64", 0x5EED000000000010), s=32, **{"lambda": 70}, scope="batch")


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------
def fmt_float(v):
    """Shortest decimal string that round-trips to the same double."""
    return repr(float(v))


def fmt_param(v):
    if isinstance(v, str):
        return v
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def wrapped(keyword, tokens):
    lines = []
    for i in range(0, max(len(tokens), 1), NUMBERS_PER_LINE):
        chunk = " ".join(tokens[i:i + NUMBERS_PER_LINE])
        lines.append(chunk if i else (keyword + " " + chunk).rstrip())
    return lines


def case_inputs(c):
    """(X, W, labels, margins) of a case; margins None except for adaptive."""
    B, D, C = c["shape"]
    adaptive = c["policy"] == "adaptive"
    kind = c["inputs"][0]
    if kind == "splitmix64":
        return splitmix64_inputs(c["inputs"][1], B, D, C, with_margins=adaptive)
    X, W, labels = constructed_inputs(c["inputs"][1], B, D, C, c["inputs"][2], c["inputs"][3])
    for i, k in c["share"]:
        labels[i] = labels[k]
    margins = inline_margins(c["margins"][0], C, labels, *c["margins"][1:]) if adaptive else None
    return X, W, labels, margins


def check_increment_form(c, X, W, labels, L, dX, dW):
    """MV-Softmax in the official code's increment form, hard φ = (t'+1)·c + t' (adaptive)
    or c + t' (fixed), must give the numbers of the t = 1 + t' form."""
    name, p, tc = c["policy"], c["params"], c["increment"]
    assert name == "mvsoftmax" and p["t"] == 1.0 + tc, c["file"]
    if p["variant"] == "adaptive":
        hard_fn = lambda cos: (tc + 1.0) * cos + tc
    else:
        hard_fn = lambda cos: cos + tc
    L2, dX2, dW2, _ = loss_and_grads(name, p, X, W, labels, hard_fn)
    assert abs(L2 - L) <= 1e-15 * max(1.0, abs(L)), (c["file"], L, L2)
    for a, b in ((dX, dX2), (dW, dW2)):
        d = (a - b).abs().max().item()
        assert d <= 1e-15 * max(1.0, a.abs().max().item()), (c["file"], "increment form differs", d)


def render_case(c):
    B, D, C = c["shape"]
    name, p = c["policy"], c["params"]
    Xf, Wf, labels, margins = case_inputs(c)
    X = torch.tensor(Xf).reshape(B, D)
    W = torch.tensor(Wf).reshape(C, D)
    check_inputs(c, X, W, labels)
    if name in MINING_POLICIES:
        n_hard, n_easy = check_mining(c, X, W, labels)
        print("%s: %d hard, %d easy non-targets" % (c["file"], n_hard, n_easy))
    L, dX, dW, dm = loss_and_grads(name, p, X, W, labels, margins=margins)
    assert math.isfinite(L) and torch.isfinite(dX).all() and torch.isfinite(dW).all(), c["file"]
    if c["increment"] is not None:
        check_increment_form(c, X, W, labels, L, dX, dW)
    # A loss this small would be dominated by the cancellation in logsumexp − z_y (for
    # AdaM-Softmax: its cross-entropy part, the loss at λ = 0).
    ce = L
    if margins is not None:
        assert torch.isfinite(dm).all(), c["file"]
        ce = loss_and_grads(name, dict(p, **{"lambda": 0}), X, W, labels, margins=margins)[0]
        print("%s: %d distinct labels, cross-entropy %.6g, loss %.6g"
              % (c["file"], len(set(labels)), ce, L))
    assert ce > 1e-3, (c["file"], "loss too small to be a meaningful reference", ce)

    if c["inputs"][0] == "splitmix64":
        rows = sorted(set(labels) | set(range(0, C, DW_ROW_STRIDE)))
    else:
        rows = list(range(C))

    out = [HEADER]
    out.append(" ".join(["policy", name] + ["%s=%s" % (k, fmt_param(p[k])) for k in PARAM_KEYS[name]]))
    out.append("shape %d %d %d" % (B, D, C))
    if c["inputs"][0] == "splitmix64":
        out.append("inputs splitmix64 %d" % c["inputs"][1])
    else:
        out.append("inputs inline")
        out += wrapped("X", [fmt_float(v) for v in Xf])
        out += wrapped("W", [fmt_float(v) for v in Wf])
        out += wrapped("labels", [str(v) for v in labels])
        if margins is not None:
            out += wrapped("margins", [fmt_float(v) for v in margins])
    out.append("loss " + fmt_float(L))
    out += wrapped("dX", [fmt_float(v) for v in dX.reshape(-1).tolist()])
    out += wrapped("dW_rows %d" % len(rows), [str(r) for r in rows])
    out += wrapped("dW", [fmt_float(v) for v in dW[rows].reshape(-1).tolist()])
    if dm is not None:
        out += wrapped("dmargins", [fmt_float(v) for v in dm.tolist()])
    return "\n".join(out) + "\n"


def main():
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    names = [c["file"] for c in CASES]
    assert len(set(names)) == len(names), "duplicate case file name"
    # Remove golden files of cases that no longer exist.
    for old in GOLDEN_DIR.glob("*.txt"):
        if old.name not in names and old.read_text(encoding="utf-8").startswith(HEADER):
            old.unlink()
    for c in CASES:
        (GOLDEN_DIR / c["file"]).write_text(render_case(c), encoding="utf-8", newline="\n")
    print("wrote %d cases to %s" % (len(CASES), GOLDEN_DIR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
