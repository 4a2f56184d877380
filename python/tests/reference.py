"""Pure-PyTorch reference implementations of every marginloss policy, written from
docs/formulas.md (never calling marginloss): one autograd graph per loss, gradients by
torch.autograd. The target transforms take the arccos route (theta = acos t, then the cosine of
the shifted or multiplied angle) where the library uses closed forms (t cos m - sin(theta) sin m,
Chebyshev polynomials for SphereFace), and SphereFace's piece k comes from floor(m theta / pi)
instead of comparisons, so the two are independent evaluations of the same formulas.

    L = mean_i [ logsumexp_j z_ij - z_iy ] + R,   z_iy = S_i f(t_i),  z_ij = S_i h(c_ij)

Mining masks (hard non-targets) are constants for differentiation (formulas.md section 5).
"""
import math

import torch
import torch.nn.functional as F


def cosines(x, w):
    c = (x / x.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).t()
    return c.clamp(-1.0, 1.0)


def _t(v, like):
    return torch.as_tensor(v, dtype=like.dtype)


def straight_through(t, value):
    """Forward `value`, derivative with respect to t taken as 1."""
    return t + (value - t).detach()


def angular(t, m1, m2, m3):
    """cos(m1 theta + m2) - m3 on the arccos route."""
    return torch.cos(m1 * torch.acos(t) + m2) - m3


def angular_target(t, m1, m2, m3, fallback, gradient):
    """formulas.md section 3: the combined angular margin with its fallback where m1 theta + m2 > pi."""
    m1, m2, m3 = _t(m1, t), _t(m2, t), _t(m3, t)
    main = angular(t, m1, m2, m3)
    if fallback == "hard_threshold":
        limit = (math.pi - m2) / m1
        use = (t > torch.cos(limit)) | (limit >= math.pi)
        value = torch.where(use, main, t - m2 * torch.sin(m2) - m3)
    elif fallback == "easy_margin":
        value = torch.where(t > 0, main, t - m3)
    elif fallback == "none":
        value = main
    else:
        raise ValueError(fallback)
    return straight_through(t, value) if gradient == "straight_through" else value


def margin_loss(x, w, y, target_fn, non_target_fn=None, scale=None):
    """The common pipeline. target_fn(t) -> f(t); non_target_fn(c, t) -> h(c) for every entry (the
    target column is replaced by f(t)); scale: a number, or None for the feature norm |x_i|."""
    c = cosines(x, w)
    t = c.gather(1, y[:, None])[:, 0]
    phi = c if non_target_fn is None else non_target_fn(c, t)
    phi = phi.scatter(1, y[:, None], target_fn(t)[:, None])
    S = x.norm(dim=1, keepdim=True) if scale is None else scale
    return F.cross_entropy(S * phi, y)


def _am_target(t, m, fallback="none", conditional_margin=False):
    m = _t(m, t)
    if conditional_margin:
        apply = t > m
    elif fallback == "easy_margin":
        apply = t > 0
    else:
        apply = torch.ones_like(t, dtype=torch.bool)
    return torch.where(apply, t - m, t)


def _mining_target_and_threshold(t, m, target, fallback, conditional_margin, gradient):
    """The margined target f(t) and the hardness threshold: t - m (AM) or the raw cos(theta + m) (Arc)."""
    if target == "additive_cosine":
        return _am_target(t, m, fallback, conditional_margin), (t - _t(m, t)).detach()
    return angular_target(t, 1.0, m, 0.0, fallback, gradient), angular(t, 1.0, _t(m, t), 0.0).detach()


def _mining_loss(x, w, y, s, m, target, fallback, conditional_margin, gradient, hard_fn):
    """hard_fn(c) is h on hard non-targets (c above the threshold; the mask is a constant)."""
    c = cosines(x, w)
    t = c.gather(1, y[:, None])[:, 0]
    f, threshold = _mining_target_and_threshold(t, m, target, fallback, conditional_margin, gradient)
    hard = (c > threshold[:, None]).detach()
    phi = torch.where(hard, hard_fn(c), c)
    phi = phi.scatter(1, y[:, None], f[:, None])
    return F.cross_entropy(s * phi, y)


# ---------------------------------------------------------------------------------------------
# One function per policy, same signature as marginloss.functional (m may be a per-sample tensor)
# ---------------------------------------------------------------------------------------------
def normface(x, w, y, s=20.0):
    return margin_loss(x, w, y, lambda t: t, scale=s)


def cosface(x, w, y, s=64.0, m=0.35, conditional_margin=False):
    return margin_loss(x, w, y, lambda t: _am_target(t, m, conditional_margin=conditional_margin), scale=s)


def arcface(x, w, y, s=64.0, m=0.5, fallback="hard_threshold", gradient="exact"):
    return margin_loss(x, w, y, lambda t: angular_target(t, 1.0, m, 0.0, fallback, gradient), scale=s)


def combined_margin(x, w, y, s=64.0, m1=1.0, m2=0.3, m3=0.2, fallback="none", gradient="exact"):
    return margin_loss(x, w, y, lambda t: angular_target(t, m1, m2, m3, fallback, gradient), scale=s)


def sphereface(x, w, y, m=4, lambda_=5.0, scale_mode="feature_norm", s=30.0):
    def f(t):
        theta = torch.acos(t)
        k = torch.floor(m * theta.detach() / math.pi).clamp(max=m - 1)
        psi = (1.0 - 2.0 * torch.remainder(k, 2.0)) * torch.cos(m * theta) - 2.0 * k
        return (lambda_ * t + psi) / (1.0 + lambda_)

    return margin_loss(x, w, y, f, scale=None if scale_mode == "feature_norm" else s)


def sv_softmax(x, w, y, s=30.0, m=0.0, t=1.2, target="additive_cosine", fallback="none", gradient="exact"):
    return _mining_loss(x, w, y, s, m, target, fallback, False, gradient, lambda c: t * c + t - 1.0)


def mv_softmax(x, w, y, s=32.0, m=0.35, t=1.2, target="additive_cosine", variant="adaptive", fallback="none",
               conditional_margin=False, gradient="exact"):
    hard = (lambda c: t * c + t - 1.0) if variant == "adaptive" else (lambda c: c + t - 1.0)
    return _mining_loss(x, w, y, s, m, target, fallback, conditional_margin, gradient, hard)


def curricular_face(x, w, y, s=64.0, m=0.5, tau=0.0, momentum=0.99, fallback="hard_threshold", gradient="exact"):
    return _mining_loss(x, w, y, s, m, "additive_angular", fallback, False, gradient, lambda c: c * (tau + c))


def amm_softmax(x, w, y, s=64.0, m=0.5, m_h=0.1, fallback="hard_threshold", gradient="exact"):
    def hard(c):
        theta = torch.acos(c)
        return torch.where(theta > m_h, torch.cos(theta - m_h), torch.ones_like(c))

    return _mining_loss(x, w, y, s, m, "additive_angular", fallback, False, gradient, hard)


def adaptive_margin(x, w, y, margins, s=30.0, lambda_m=70.0, scope="all_classes"):
    ce = margin_loss(x, w, y, lambda t: t - margins[y], scale=s)
    classes = torch.arange(w.shape[0]) if scope == "all_classes" else torch.unique(y)
    return ce - lambda_m * margins[classes].mean()


def class_margins(x, w, y, margins, base="cosface", **params):
    """The base policy with m = margins[y_i] in row i."""
    return globals()[base](x, w, y, m=margins[y].detach(), **params)


# ---------------------------------------------------------------------------------------------
# Heads for the training-step tests
# ---------------------------------------------------------------------------------------------
def target_cosines(x, w, y):
    with torch.no_grad():
        return cosines(x, w).gather(1, y[:, None])[:, 0]
