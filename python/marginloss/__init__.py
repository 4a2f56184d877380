"""marginloss: margin-based normalised-softmax losses for PyTorch (CPU), with the analytic
gradients of the header-only C++ library.

    import marginloss
    head = marginloss.ArcFace(num_classes, embedding_size, s=64.0, m=0.5)   # owns the class weights
    loss = head(embeddings, labels)                                         # batch mean
    loss = marginloss.functional.arcface(embeddings, weight, labels, s=64.0, m=0.5)

See python/README.md for the policies, their parameters and how the package is built.
"""
from . import functional
from .modules import (AdaptiveMargin, AMMSoftmax, ArcFace, ClassMargins, CombinedMargin, CosFace, CurricularFace,
                      LambdaSchedule, MVSoftmax, NormFace, SphereFace, SVSoftmax)

__version__ = "0.1.0"

__all__ = ["functional", "NormFace", "CosFace", "ArcFace", "CombinedMargin", "SphereFace", "SVSoftmax", "MVSoftmax",
           "CurricularFace", "AMMSoftmax", "AdaptiveMargin", "ClassMargins", "LambdaSchedule", "build_info"]


def build_info():
    """How the extension was compiled: vector instruction sets in use (Eigen), OpenMP."""
    from . import _C
    return {"simd": _C.simd, "eigen_simd": _C.simd_instruction_sets, "openmp": bool(_C.openmp)}
