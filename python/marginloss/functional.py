"""marginloss.functional: one function per policy, ``(embeddings, weight, labels, **params) -> loss``.

Every function returns the batch-mean loss as a 0-d tensor of the inputs' dtype, differentiable
in ``embeddings`` (B x D) and ``weight`` (C x D) -- both raw, un-normalised: the C++ library
normalises them and returns the gradients with respect to the raw tensors -- and, for
:func:`adaptive_margin`, in ``margins``. The gradients are the library's analytic ones (one
backward per forward; no double backward).

Inputs: CPU tensors, float32 or float64 (``embeddings`` and ``weight`` of the same dtype; the
policy runs in it), labels int64 or int32, 1-D, in [0, C). Contiguous tensors are used in place;
a non-contiguous ``embeddings``, ``weight`` or ``labels`` is copied once (``.contiguous()``).
Bad tensors raise TypeError (type, dtype) or ValueError (shape, device); bad values (labels out
of range, zero or non-finite rows, hyper-parameters outside their domain) raise ValueError with
the C++ library's message. CUDA tensors raise NotImplementedError: this package wraps the CPU
library only.

Parameters carry the C++ policy members' names and defaults (include/marginloss/policies/);
enumerations are given by name: ``fallback`` in {"hard_threshold", "easy_margin", "none"},
``gradient`` in {"exact", "straight_through"}, ``target`` in {"additive_cosine",
"additive_angular"}, ``variant`` in {"adaptive", "fixed"}, ``scale_mode`` in {"feature_norm",
"fixed"}, ``scope`` in {"all_classes", "batch_classes"}. SphereFace's ``lambda`` (a Python
keyword) is ``lambda_``; ``**{"lambda": 5.0}`` is accepted too.
"""
import math

import torch

try:
    from . import _C
except ImportError as e:  # pragma: no cover - only without a built extension
    raise ImportError("marginloss: the compiled extension marginloss._C is missing or does not load (%s). "
                      "Install with: python3 -m pip install --no-build-isolation ./python" % e) from e

__all__ = ["normface", "cosface", "arcface", "combined_margin", "sphereface", "sv_softmax", "mv_softmax",
           "curricular_face", "amm_softmax", "adaptive_margin", "class_margins", "target_cosines",
           "project_margins", "mv_t_from_increment"]

FALLBACK = {"hard_threshold": 0, "easy_margin": 1, "none": 2}
GRADIENT = {"exact": 0, "straight_through": 1}
TARGET = {"additive_cosine": 0, "additive_angular": 1}
VARIANT = {"adaptive": 0, "fixed": 1}
SCALE = {"feature_norm": 0, "fixed": 1}
SCOPE = {"all_classes": 0, "batch_classes": 1}


# ---------------------------------------------------------------------------------------------
# Argument checks (the C++ side checks again; these give Python exception types and names)
# ---------------------------------------------------------------------------------------------
def _enum(name, value, table):
    if isinstance(value, str) and value in table:
        return table[value]
    raise ValueError("marginloss: %s = %r is not one of %s" % (name, value, ", ".join(repr(k) for k in table)))


def _real(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError("marginloss: %s must be a real number, got %r" % (name, value)) from None
    return v


def _device_check(name, t):
    if t.device.type == "cuda":
        raise NotImplementedError(
            "marginloss: %s is a CUDA tensor; this package wraps the CPU library only (marginloss::cuda is "
            "not dispatched from Python): move the tensors to the CPU" % name)
    if t.device.type != "cpu":
        raise ValueError("marginloss: %s is on device %s; only CPU tensors are supported" % (name, t.device))


def _check(embeddings, weight, labels, margins=None):
    for name, t in (("embeddings", embeddings), ("weight", weight), ("labels", labels)) + \
            ((("margins", margins),) if margins is not None else ()):
        if not isinstance(t, torch.Tensor):
            raise TypeError("marginloss: %s must be a torch.Tensor, got %s" % (name, type(t).__name__))
        _device_check(name, t)
    if embeddings.dtype not in (torch.float32, torch.float64):
        raise TypeError("marginloss: embeddings must be float32 or float64, got %s" % embeddings.dtype)
    for name, t in (("weight", weight),) + ((("margins", margins),) if margins is not None else ()):
        if t.dtype != embeddings.dtype:
            raise TypeError("marginloss: %s is %s but embeddings is %s: both must have the same dtype"
                            % (name, t.dtype, embeddings.dtype))
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError("marginloss: labels must be int64 or int32, got %s" % labels.dtype)
    if embeddings.dim() != 2:
        raise ValueError("marginloss: embeddings must be 2-D (B x D), got shape %s" % (tuple(embeddings.shape),))
    if weight.dim() != 2:
        raise ValueError("marginloss: weight must be 2-D (C x D), got shape %s" % (tuple(weight.shape),))
    if labels.dim() != 1:
        raise ValueError("marginloss: labels must be 1-D (B), got shape %s" % (tuple(labels.shape),))
    if weight.shape[1] != embeddings.shape[1]:
        raise ValueError("marginloss: weight has %d columns but embeddings has %d: both must have D columns"
                         % (weight.shape[1], embeddings.shape[1]))
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError("marginloss: labels has %d entries but embeddings has %d rows"
                         % (labels.shape[0], embeddings.shape[0]))
    if margins is not None and (margins.dim() != 1 or margins.shape[0] != weight.shape[0]):
        raise ValueError("marginloss: margins must be 1-D with one entry per class (%d), got shape %s"
                         % (weight.shape[0], tuple(margins.shape)))


# ---------------------------------------------------------------------------------------------
# The policies
# ---------------------------------------------------------------------------------------------
def normface(embeddings, weight, labels, s=20.0):
    """NormFace: z_iy = s t_i, z_ij = s c_ij (no margin)."""
    _check(embeddings, weight, labels)
    return _C.normface(embeddings, weight, labels, _real("s", s))


def cosface(embeddings, weight, labels, s=64.0, m=0.35, conditional_margin=False):
    """CosFace / AM-Softmax: z_iy = s (t_i - m); conditional_margin: only where t_i > m (AM-Softmax Caffe)."""
    _check(embeddings, weight, labels)
    return _C.cosface(embeddings, weight, labels, _real("s", s), _real("m", m), bool(conditional_margin))


def arcface(embeddings, weight, labels, s=64.0, m=0.5, fallback="hard_threshold", gradient="exact"):
    """ArcFace: z_iy = s cos(theta_iy + m) with a fallback where theta + m > pi; gradient "exact" or
    "straight_through" (insightface arcface_torch)."""
    _check(embeddings, weight, labels)
    return _C.arcface(embeddings, weight, labels, _real("s", s), _real("m", m), _enum("fallback", fallback, FALLBACK),
                      _enum("gradient", gradient, GRADIENT))


def combined_margin(embeddings, weight, labels, s=64.0, m1=1.0, m2=0.3, m3=0.2, fallback="none", gradient="exact"):
    """Combined margin (insightface): z_iy = s (cos(m1 theta_iy + m2) - m3)."""
    _check(embeddings, weight, labels)
    return _C.combined_margin(embeddings, weight, labels, _real("s", s), _real("m1", m1), _real("m2", m2),
                              _real("m3", m3), _enum("fallback", fallback, FALLBACK),
                              _enum("gradient", gradient, GRADIENT))


def _integer(name, value):
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError("marginloss: %s = %r must be an integer" % (name, value))
    return int(value)


def sphereface(embeddings, weight, labels, m=4, lambda_=5.0, scale_mode="feature_norm", s=30.0, **kwargs):
    """SphereFace / A-Softmax: z_iy = S_i (lambda t + psi(theta)) / (1 + lambda), S_i = |x_i|
    (scale_mode "feature_norm", the original) or s ("fixed"). ``lambda`` may be given as ``lambda_``
    or ``**{"lambda": v}``."""
    if "lambda" in kwargs:
        lambda_ = kwargs.pop("lambda")
    if kwargs:
        raise TypeError("sphereface() got unexpected keyword arguments %s" % ", ".join(sorted(kwargs)))
    _check(embeddings, weight, labels)
    return _C.sphereface(embeddings, weight, labels, _integer("m", m), _real("lambda", lambda_),
                         _enum("scale_mode", scale_mode, SCALE), _real("s", s))


def sv_softmax(embeddings, weight, labels, s=30.0, m=0.0, t=1.2, target="additive_cosine", fallback="none",
               gradient="exact"):
    """SV-Softmax: hard non-targets (c_ij above the margined target) get t c + t - 1."""
    _check(embeddings, weight, labels)
    return _C.sv_softmax(embeddings, weight, labels, _real("s", s), _real("m", m), _real("t", t),
                         _enum("target", target, TARGET), _enum("fallback", fallback, FALLBACK),
                         _enum("gradient", gradient, GRADIENT))


def mv_softmax(embeddings, weight, labels, s=32.0, m=0.35, t=1.2, target="additive_cosine", variant="adaptive",
               fallback="none", conditional_margin=False, gradient="exact"):
    """MV-Softmax: AM or Arc target; hard non-targets get t c + t - 1 (adaptive) or c + t - 1 (fixed).
    The official code's increment t' is t = t' + 1 here (mv_t_from_increment)."""
    _check(embeddings, weight, labels)
    return _C.mv_softmax(embeddings, weight, labels, _real("s", s), _real("m", m), _real("t", t),
                         _enum("target", target, TARGET), _enum("variant", variant, VARIANT),
                         _enum("fallback", fallback, FALLBACK), bool(conditional_margin),
                         _enum("gradient", gradient, GRADIENT))


def curricular_face(embeddings, weight, labels, s=64.0, m=0.5, tau=0.0, momentum=0.99, fallback="hard_threshold",
                    gradient="exact"):
    """CurricularFace with a given tau (hard non-targets get c (tau + c)). The functional form does
    not update tau; ``momentum`` is the C++ member used by the update (validated, no effect on the
    loss). marginloss.CurricularFace keeps tau as a buffer and updates it inside forward."""
    _check(embeddings, weight, labels)
    return _C.curricular_face(embeddings, weight, labels, _real("s", s), _real("m", m), _real("tau", tau),
                              _real("momentum", momentum), _enum("fallback", fallback, FALLBACK),
                              _enum("gradient", gradient, GRADIENT))


def amm_softmax(embeddings, weight, labels, s=64.0, m=0.5, m_h=0.1, fallback="hard_threshold", gradient="exact"):
    """AMM-Softmax (a reconstruction, see the C++ header): ArcFace target; hard non-targets get
    cos(max(theta - m_h, 0))."""
    _check(embeddings, weight, labels)
    return _C.amm_softmax(embeddings, weight, labels, _real("s", s), _real("m", m), _real("m_h", m_h),
                          _enum("fallback", fallback, FALLBACK), _enum("gradient", gradient, GRADIENT))


def adaptive_margin(embeddings, weight, labels, margins, s=30.0, lambda_m=70.0, scope="all_classes"):
    """AdaM-Softmax (AdaptiveFace): CosFace with a learnable margin per class, z_iy = s (t_i - m_{y_i}).

    Returns the total loss as the C++ library's forward does: the batch-mean cross-entropy PLUS the
    regulariser R = -lambda_m mean_{j in J} m_j (J: every class for scope "all_classes", the
    batch's classes for "batch_classes"). Differentiable in embeddings, weight and margins (C
    entries, the embeddings' dtype); project the margins to [0, 1] after each optimiser step with
    :func:`project_margins`."""
    _check(embeddings, weight, labels, margins)
    return _C.adaptive_margin(embeddings, weight, labels, margins, _real("s", s), _real("lambda_m", lambda_m),
                              _enum("scope", scope, SCOPE))


# class_margins: the base policies with a margin member m, and their other parameters (defaults).
_CLASS_MARGIN_BASES = {
    "cosface": (dict(s=64.0, conditional_margin=False),
                lambda p: (p["s"], bool(p["conditional_margin"]))),
    "arcface": (dict(s=64.0, fallback="hard_threshold", gradient="exact"),
                lambda p: (p["s"], _enum("fallback", p["fallback"], FALLBACK),
                           _enum("gradient", p["gradient"], GRADIENT))),
    "sv_softmax": (dict(s=30.0, t=1.2, target="additive_cosine", fallback="none", gradient="exact"),
                   lambda p: (p["s"], p["t"], _enum("target", p["target"], TARGET),
                              _enum("fallback", p["fallback"], FALLBACK), _enum("gradient", p["gradient"], GRADIENT))),
    "mv_softmax": (dict(s=32.0, t=1.2, target="additive_cosine", variant="adaptive", fallback="none",
                        conditional_margin=False, gradient="exact"),
                   lambda p: (p["s"], p["t"], _enum("target", p["target"], TARGET),
                              _enum("variant", p["variant"], VARIANT), _enum("fallback", p["fallback"], FALLBACK),
                              bool(p["conditional_margin"]), _enum("gradient", p["gradient"], GRADIENT))),
    "curricular_face": (dict(s=64.0, tau=0.0, momentum=0.99, fallback="hard_threshold", gradient="exact"),
                        lambda p: (p["s"], p["tau"], p["momentum"], _enum("fallback", p["fallback"], FALLBACK),
                                   _enum("gradient", p["gradient"], GRADIENT))),
    "amm_softmax": (dict(s=64.0, m_h=0.1, fallback="hard_threshold", gradient="exact"),
                    lambda p: (p["s"], p["m_h"], _enum("fallback", p["fallback"], FALLBACK),
                               _enum("gradient", p["gradient"], GRADIENT))),
}
CLASS_MARGIN_BASES = tuple(_CLASS_MARGIN_BASES)


def class_margins(embeddings, weight, labels, margins, base="cosface", **params):
    """Fixed per-class margins (ml::class_margins): the policy ``base`` (one of CLASS_MARGIN_BASES:
    cosface, arcface, sv_softmax, mv_softmax, curricular_face, amm_softmax) with its margin m
    replaced by margins[y_i] in the row of sample i. ``params``: the base's other parameters.
    The margins (C entries >= 0, the embeddings' dtype) are constants: no gradient reaches them
    (see margins_from_class_counts for the LDAM choice)."""
    if base not in _CLASS_MARGIN_BASES:
        raise ValueError("marginloss: base = %r is not one of %s" % (base, ", ".join(map(repr, CLASS_MARGIN_BASES))))
    defaults, convert = _CLASS_MARGIN_BASES[base]
    if "m" in params:
        raise TypeError("class_margins(): m comes from margins, one per class; do not pass m")
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError("class_margins(base=%r) got unexpected keyword arguments %s (accepted: %s)"
                        % (base, ", ".join(sorted(unknown)), ", ".join(defaults)))
    p = dict(defaults, **params)
    for k in ("s", "t", "tau", "momentum", "m_h"):
        if k in p:
            p[k] = _real(k, p[k])
    _check(embeddings, weight, labels, margins)
    return getattr(_C, "class_margins_" + base)(embeddings, weight, labels, margins.detach(), *convert(p))


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def target_cosines(embeddings, weight, labels):
    """t_i = cos(x_i, w_{y_i}), clamped to [-1, 1], not differentiated (B entries): what
    CurricularFace's tau is updated from."""
    _check(embeddings, weight, labels)
    return _C.target_cosines(embeddings.detach(), weight.detach(), labels)


@torch.no_grad()
def project_margins(margins, lo=0.0, hi=1.0):
    """Clamps learnable margins to [lo, hi] in place (AdaptiveFace: [0, 1]) after an optimiser step."""
    if not lo <= hi:
        raise ValueError("marginloss: project_margins: lo = %r must be <= hi = %r" % (lo, hi))
    margins.clamp_(lo, hi)
    return margins


def mv_t_from_increment(increment):
    """The official MV-Softmax code's increment t' as this library's t (= t' + 1)."""
    return float(increment) + 1.0


def margins_from_class_counts(counts, max_margin, dtype=torch.float64):
    """LDAM margins m_j = max_margin (n_min / n_j)^(1/4), the largest for the rarest class."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0 or not bool((counts >= 1).all()):
        raise ValueError("marginloss: margins_from_class_counts: counts must be a non-empty 1-D list of counts >= 1")
    if not (math.isfinite(max_margin) and max_margin >= 0):
        raise ValueError("marginloss: margins_from_class_counts: max_margin = %r must be >= 0" % max_margin)
    return (max_margin * (counts.min() / counts) ** 0.25).to(dtype)
