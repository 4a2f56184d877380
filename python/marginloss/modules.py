"""torch.nn.Module heads that own the class weights, like insightface's and
pytorch-metric-learning's: ``head = marginloss.ArcFace(num_classes, embedding_size, s=64, m=0.5)``,
then ``loss = head(embeddings, labels)``.

``weight`` is a (num_classes x embedding_size) Parameter, initialised N(0, 0.01^2) (insightface);
``device`` and ``dtype`` are the usual factory arguments. The hyper-parameters are plain
attributes (change ``head.m`` between steps for a schedule). CurricularFace keeps tau as a
buffer updated inside forward (training mode), SphereFace can anneal lambda with a
LambdaSchedule (iteration counter as a buffer), AdaptiveMargin owns its margins as a Parameter.
"""
import torch

from . import functional as F

__all__ = ["NormFace", "CosFace", "ArcFace", "CombinedMargin", "SphereFace", "SVSoftmax", "MVSoftmax",
           "CurricularFace", "AMMSoftmax", "AdaptiveMargin", "ClassMargins", "LambdaSchedule"]


class _Head(torch.nn.Module):
    _params = ()

    def __init__(self, num_classes, embedding_size, device=None, dtype=None):
        super().__init__()
        if int(num_classes) < 1 or int(embedding_size) < 1:
            raise ValueError("marginloss: num_classes = %r and embedding_size = %r must be >= 1"
                             % (num_classes, embedding_size))
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.weight = torch.nn.Parameter(torch.empty(self.num_classes, self.embedding_size, device=device,
                                                     dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.normal_(self.weight, std=0.01)

    def params(self):
        """The keyword arguments this head passes to its functional form."""
        return {k: getattr(self, k) for k in self._params}

    def extra_repr(self):
        return "num_classes=%d, embedding_size=%d, %s" % (
            self.num_classes, self.embedding_size, ", ".join("%s=%r" % kv for kv in self.params().items()))


def _head(name, functional, params, doc):
    """A head class calling `functional` with the named parameters (keyword defaults as given)."""
    names = tuple(params)

    def __init__(self, num_classes, embedding_size, *, device=None, dtype=None, **kwargs):
        unknown = set(kwargs) - set(names)
        if unknown:
            raise TypeError("%s() got unexpected keyword arguments %s" % (name, ", ".join(sorted(unknown))))
        _Head.__init__(self, num_classes, embedding_size, device=device, dtype=dtype)
        for k in names:
            setattr(self, k, kwargs.get(k, params[k]))

    def forward(self, embeddings, labels):
        return functional(embeddings, self.weight, labels, **self.params())

    return type(name, (_Head,), {"__init__": __init__, "forward": forward, "_params": names, "__doc__": doc})


NormFace = _head("NormFace", F.normface, dict(s=20.0), "NormFace head: marginloss.functional.normface.")
CosFace = _head("CosFace", F.cosface, dict(s=64.0, m=0.35, conditional_margin=False),
                "CosFace / AM-Softmax head: marginloss.functional.cosface.")
ArcFace = _head("ArcFace", F.arcface, dict(s=64.0, m=0.5, fallback="hard_threshold", gradient="exact"),
                "ArcFace head: marginloss.functional.arcface.")
CombinedMargin = _head("CombinedMargin", F.combined_margin,
                       dict(s=64.0, m1=1.0, m2=0.3, m3=0.2, fallback="none", gradient="exact"),
                       "Combined-margin head: marginloss.functional.combined_margin.")
SVSoftmax = _head("SVSoftmax", F.sv_softmax,
                  dict(s=30.0, m=0.0, t=1.2, target="additive_cosine", fallback="none", gradient="exact"),
                  "SV-Softmax head: marginloss.functional.sv_softmax.")
MVSoftmax = _head("MVSoftmax", F.mv_softmax,
                  dict(s=32.0, m=0.35, t=1.2, target="additive_cosine", variant="adaptive", fallback="none",
                       conditional_margin=False, gradient="exact"),
                  "MV-Softmax head: marginloss.functional.mv_softmax.")
AMMSoftmax = _head("AMMSoftmax", F.amm_softmax,
                   dict(s=64.0, m=0.5, m_h=0.1, fallback="hard_threshold", gradient="exact"),
                   "AMM-Softmax head (a reconstruction): marginloss.functional.amm_softmax.")


class LambdaSchedule:
    """SphereFace's lambda annealing (official training; ml::LambdaSchedule): at every training
    forward the iteration is incremented first, then
    lambda = max(lambda_min, base (1 + gamma iteration)^(-power))."""

    def __init__(self, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0):
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)

    def lambda_at(self, iteration):
        return max(self.lambda_min, self.base * (1.0 + self.gamma * float(iteration)) ** (-self.power))

    def __repr__(self):
        return "LambdaSchedule(base=%r, gamma=%r, power=%r, lambda_min=%r)" % (
            self.base, self.gamma, self.power, self.lambda_min)


class SphereFace(_Head):
    """SphereFace / A-Softmax head: marginloss.functional.sphereface (m=4, lambda_=5,
    scale_mode="feature_norm", s=30). With ``lambda_schedule=LambdaSchedule()`` each training
    forward advances the buffer ``iteration`` and uses the schedule's lambda (stored in
    ``lambda_``); in eval mode lambda_ is used as it is."""
    _params = ("m", "lambda_", "scale_mode", "s")

    def __init__(self, num_classes, embedding_size, m=4, lambda_=5.0, scale_mode="feature_norm", s=30.0,
                 lambda_schedule=None, *, device=None, dtype=None, **kwargs):
        if "lambda" in kwargs:
            lambda_ = kwargs.pop("lambda")
        if kwargs:
            raise TypeError("SphereFace() got unexpected keyword arguments %s" % ", ".join(sorted(kwargs)))
        super().__init__(num_classes, embedding_size, device=device, dtype=dtype)
        self.m, self.lambda_, self.scale_mode, self.s = m, lambda_, scale_mode, s
        self.lambda_schedule = lambda_schedule
        self.register_buffer("iteration", torch.zeros((), dtype=torch.int64, device=device))

    def forward(self, embeddings, labels):
        if self.training and self.lambda_schedule is not None:
            self.iteration += 1
            self.lambda_ = self.lambda_schedule.lambda_at(int(self.iteration))
        return F.sphereface(embeddings, self.weight, labels, **self.params())


class CurricularFace(_Head):
    """CurricularFace head: marginloss.functional.curricular_face with tau a buffer. In training
    mode every forward first updates tau from the batch's raw target cosines, as the official code
    does: tau <- (1 - momentum) mean_i(t_i) + momentum tau (tau_0 = 0), then computes the loss with
    the new tau. In eval mode tau is left as it is."""
    _params = ("s", "m", "momentum", "fallback", "gradient")

    def __init__(self, num_classes, embedding_size, s=64.0, m=0.5, momentum=0.99, fallback="hard_threshold",
                 gradient="exact", *, device=None, dtype=None):
        super().__init__(num_classes, embedding_size, device=device, dtype=dtype)
        self.s, self.m, self.momentum, self.fallback, self.gradient = s, m, momentum, fallback, gradient
        self.register_buffer("tau", torch.zeros((), dtype=self.weight.dtype, device=device))

    def forward(self, embeddings, labels):
        if self.training:
            t = F.target_cosines(embeddings, self.weight, labels)
            with torch.no_grad():
                self.tau.copy_((1.0 - self.momentum) * t.mean() + self.momentum * self.tau)
        return F.curricular_face(embeddings, self.weight, labels, tau=float(self.tau), **self.params())


class AdaptiveMargin(_Head):
    """AdaM-Softmax head (AdaptiveFace): learnable per-class margins ``margins`` (a Parameter,
    initialised U(0.3, 0.4) as FaceX-Zoo), s=30, lambda_m=70, scope "all_classes". The loss
    includes the regulariser (see functional.adaptive_margin). Call ``project_margins()`` after
    each optimiser step (clamps to [0, 1])."""
    _params = ("s", "lambda_m", "scope")

    def __init__(self, num_classes, embedding_size, s=30.0, lambda_m=70.0, scope="all_classes", *, device=None,
                 dtype=None):
        super().__init__(num_classes, embedding_size, device=device, dtype=dtype)
        self.s, self.lambda_m, self.scope = s, lambda_m, scope
        self.margins = torch.nn.Parameter(torch.empty(self.num_classes, device=device, dtype=self.weight.dtype))
        with torch.no_grad():
            self.margins.uniform_(0.3, 0.4)

    def forward(self, embeddings, labels):
        return F.adaptive_margin(embeddings, self.weight, labels, self.margins, **self.params())

    def project_margins(self, lo=0.0, hi=1.0):
        F.project_margins(self.margins, lo, hi)


class ClassMargins(_Head):
    """Fixed per-class margins (a buffer ``margins``, C entries) on a base policy with a margin m:
    marginloss.functional.class_margins. ``base`` in functional.CLASS_MARGIN_BASES; keyword
    arguments are the base's other parameters."""

    def __init__(self, num_classes, embedding_size, margins, base="cosface", *, device=None, dtype=None, **params):
        super().__init__(num_classes, embedding_size, device=device, dtype=dtype)
        if base not in F.CLASS_MARGIN_BASES:
            raise ValueError("marginloss: base = %r is not one of %s" % (base, ", ".join(F.CLASS_MARGIN_BASES)))
        self.base = base
        self.base_params = dict(params)
        margins = torch.as_tensor(margins, dtype=self.weight.dtype, device=self.weight.device).detach().clone()
        if margins.shape != (self.num_classes,):
            raise ValueError("marginloss: margins must have one entry per class (%d), got shape %s"
                             % (self.num_classes, tuple(margins.shape)))
        self.register_buffer("margins", margins)

    def params(self):
        return dict(base=self.base, **self.base_params)

    def forward(self, embeddings, labels):
        return F.class_margins(embeddings, self.weight, labels, self.margins, base=self.base, **self.base_params)
