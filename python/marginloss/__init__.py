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


def _version():
    """The version of this copy of the package. Installed by pip: its metadata, which setup.py took
    from the C++ library's include/marginloss/config.hpp. Run from a checkout or from a build tree
    inside one (CTest puts the build tree on PYTHONPATH): that config.hpp itself, found in the
    first parent directory holding include/marginloss/config.hpp. Otherwise "unknown"."""
    import os
    import re
    here = os.path.abspath(__file__)
    try:
        from importlib import metadata
        dist = metadata.distribution("marginloss")
        installed = os.path.abspath(str(dist.locate_file(os.path.join("marginloss", "__init__.py"))))
        # Only the metadata of this very copy: another installed marginloss says nothing about it.
        if os.path.exists(installed) and os.path.samefile(installed, here):
            return dist.version
    except Exception:  # not installed, no importlib.metadata, unreadable metadata
        pass
    directory = os.path.dirname(here)
    while True:
        config = os.path.join(directory, "include", "marginloss", "config.hpp")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as f:
                parts = dict(re.findall(r"(?m)^#define MARGINLOSS_VERSION_(MAJOR|MINOR|PATCH) +([0-9]+) *$", f.read()))
            if len(parts) == 3:
                return "%s.%s.%s" % (parts["MAJOR"], parts["MINOR"], parts["PATCH"])
        parent = os.path.dirname(directory)
        if parent == directory:
            return "unknown"
        directory = parent


__version__ = _version()

__all__ = ["functional", "NormFace", "CosFace", "ArcFace", "CombinedMargin", "SphereFace", "SVSoftmax", "MVSoftmax",
           "CurricularFace", "AMMSoftmax", "AdaptiveMargin", "ClassMargins", "LambdaSchedule", "build_info"]


def build_info():
    """How the extension was compiled: vector instruction sets in use (Eigen), OpenMP, and the
    library computing the float products ("oneDNN" or "Eigen", setup.py's MARGINLOSS_PRODUCTS)."""
    from . import _C
    return {"simd": _C.simd, "eigen_simd": _C.simd_instruction_sets, "openmp": bool(_C.openmp),
            "products": _C.products}
