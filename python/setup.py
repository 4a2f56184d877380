"""Build of the marginloss PyTorch package with torch's own extension tooling.

    /usr/bin/python3 -m pip install --no-build-isolation ./python      (from the repository root)

The extension marginloss._C compiles the header-only C++ library (../include, so build from a
checkout of the repository) against the torch of the interpreter running pip. It needs Eigen 3.4
headers: $EIGEN3_INCLUDE_DIR, else pkg-config eigen3, else /usr/include/eigen3 or
/usr/local/include/eigen3 (Debian: libeigen3-dev).

Vector extensions: the extension is compiled with -march=native by default, for the CPU of the
machine that builds it (AVX2/AVX-512 and FMA where present: Eigen's products use them). Set
MARGINLOSS_MARCH to build for another target, e.g. MARGINLOSS_MARCH=x86-64-v3 for any AVX2
machine, or MARGINLOSS_MARCH=none for the compiler's default (SSE2 on x86-64), which is what a
wheel for other machines needs. MARGINLOSS_OPENMP=0 builds without OpenMP.

Products: MARGINLOSS_PRODUCTS=auto (default) computes the float products with oneDNN's
dnnl_sgemm when oneDNN is installed (dnnl.h and libdnnl; Debian: libdnnl-dev), as the C++
target marginloss::onednn does (-DMARGINLOSS_PRODUCTS_ONEDNN -ldnnl), else with Eigen;
MARGINLOSS_PRODUCTS=onednn requires oneDNN, MARGINLOSS_PRODUCTS=eigen uses Eigen.
marginloss._C.products says which one was built.

Language standard: C++17, or C++20 where the torch built against requires it in its headers (recent
PyPI torch 2.x releases, e.g. 2.15); MARGINLOSS_CXX_STD=20 forces it.
"""
import os
import re
import shlex
import subprocess
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LIB_INCLUDE = os.path.join(ROOT, "include")
CSRC = os.path.join("csrc")


def eigen_include():
    env = os.environ.get("EIGEN3_INCLUDE_DIR")
    candidates = [env] if env else []
    try:
        out = subprocess.run(["pkg-config", "--cflags-only-I", "eigen3"], capture_output=True, text=True, check=True)
        candidates += [a[2:] for a in shlex.split(out.stdout) if a.startswith("-I")]
    except (OSError, subprocess.CalledProcessError):
        pass
    prefix = os.environ.get("CONDA_PREFIX") or sys.prefix
    candidates += [os.path.join(prefix, "include", "eigen3"), "/usr/include/eigen3", "/usr/local/include/eigen3"]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "Eigen", "Core")):
            return c
    sys.exit("marginloss: Eigen 3.4 headers not found (Debian: apt-get install libeigen3-dev; "
             "or set EIGEN3_INCLUDE_DIR to the directory holding Eigen/Core)")


def library_version():
    """MAJOR.MINOR.PATCH of the C++ library, from the three #defines of include/marginloss/config.hpp:
    the version is written only there (CMakeLists.txt reads the same lines), so the package and
    the library it compiles cannot disagree."""
    path = os.path.join(LIB_INCLUDE, "marginloss", "config.hpp")
    parts = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"#define MARGINLOSS_VERSION_(MAJOR|MINOR|PATCH) +([0-9]+) *$", line.rstrip("\n"))
            if m:
                parts[m.group(1)] = m.group(2)
    missing = [p for p in ("MAJOR", "MINOR", "PATCH") if p not in parts]
    if missing:
        sys.exit("marginloss: no '#define MARGINLOSS_VERSION_%s <number>' in %s" % (missing[0], path))
    return "%s.%s.%s" % (parts["MAJOR"], parts["MINOR"], parts["PATCH"])


SYSTEM_LIB_DIRS = {os.path.realpath(d) for d in (
    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
    "/usr/lib64", "/usr/lib", "/lib64", "/lib", "/usr/local/lib")}


def onednn_paths():
    """(include directory, library directory) of oneDNN, or None: $DNNL_ROOT, else the system's."""
    roots = [os.environ["DNNL_ROOT"]] if os.environ.get("DNNL_ROOT") else []
    roots += ["/usr", "/usr/local"]
    for root in roots:
        inc = os.path.join(root, "include")
        if not os.path.isfile(os.path.join(inc, "dnnl.h")):
            continue
        for lib in ("lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "lib64", "lib"):
            libdir = os.path.join(root, lib)
            if os.path.exists(os.path.join(libdir, "libdnnl.so")):
                return inc, libdir
    return None


if not os.path.isfile(os.path.join(LIB_INCLUDE, "marginloss", "marginloss.hpp")):
    sys.exit("marginloss: %s/marginloss/marginloss.hpp not found: build the package from a checkout of the "
             "repository (pip install --no-build-isolation ./python)" % LIB_INCLUDE)
VERSION = library_version()

# torch is imported only now: `setup.py --version` and the like work without it.
from torch.utils.cpp_extension import BuildExtension, CppExtension, include_paths  # noqa: E402


def cxx_standard():
    """-std=c++NN for the extension: C++17 (the library's), or the newer standard the torch being
    built against demands in its own headers (ATen/ATen.h: "#error C++20 or later compatible
    compiler is required", PyPI torch 2.x's recent releases; Debian's torch 1.13 asks for C++14).
    MARGINLOSS_CXX_STD=17/20/23 overrides."""
    env = os.environ.get("MARGINLOSS_CXX_STD", "").strip()
    if env:
        return "c++" + env.replace("c++", "")
    needed = 17
    for inc in include_paths():
        header = os.path.join(inc, "ATen", "ATen.h")
        if os.path.isfile(header):
            with open(header, encoding="utf-8", errors="replace") as f:
                m = re.search(r"#error C\+\+(\d+) or later compatible compiler is required", f.read())
            if m:
                needed = max(needed, int(m.group(1)))
            break
    return "c++%d" % needed


march = os.environ.get("MARGINLOSS_MARCH", "native").strip()
openmp = os.environ.get("MARGINLOSS_OPENMP", "1") != "0"
# -Wno-(maybe-)uninitialized: GCC < 13 warns inside its own avx512fintrin.h wherever Eigen's
# AVX-512 packets are inlined (GCC bug 105593), a false positive.
cxx_flags = ["-std=" + cxx_standard(), "-O3", "-g0", "-DNDEBUG", "-Wall", "-Wextra", "-Wno-maybe-uninitialized",
             "-Wno-uninitialized"]
if march and march != "none":
    cxx_flags.append("-march=" + march)
if openmp:
    cxx_flags.append("-fopenmp")

products = os.environ.get("MARGINLOSS_PRODUCTS", "auto").strip().lower()
if products not in ("auto", "onednn", "eigen"):
    sys.exit("marginloss: MARGINLOSS_PRODUCTS=%s: expected auto, onednn or eigen" % products)
dnnl = onednn_paths() if products != "eigen" else None
if products == "onednn" and dnnl is None:
    sys.exit("marginloss: MARGINLOSS_PRODUCTS=onednn but oneDNN (dnnl.h, libdnnl.so) was not found "
             "(Debian: apt-get install libdnnl-dev; or set DNNL_ROOT)")
extra_include, library_dirs, libraries = [], [], []
if dnnl is not None:
    cxx_flags.append("-DMARGINLOSS_PRODUCTS_ONEDNN")
    extra_include.append(dnnl[0])
    # The system's own directories are searched by the linker anyway: naming them with -L would put
    # them before torch's lib/ (CppExtension appends it), and a Debian libtorch-dev's libc10.so there
    # would then shadow a venv torch's (undefined symbols at import).
    if os.path.realpath(dnnl[1]) not in SYSTEM_LIB_DIRS:
        library_dirs.append(dnnl[1])
    libraries.append("dnnl")

setup(
    name="marginloss",
    version=VERSION,
    description="Margin-based normalised-softmax losses (ArcFace, CosFace, ...) for PyTorch, "
                "with analytic gradients from the marginloss C++ library",
    packages=["marginloss"],
    python_requires=">=3.8",
    ext_modules=[
        CppExtension(
            "marginloss._C",
            sources=[os.path.join(CSRC, f) for f in ("module.cpp", "bind_basic.cpp", "bind_mining.cpp",
                                                     "bind_margins.cpp")],
            include_dirs=[os.path.join(HERE, CSRC), LIB_INCLUDE, eigen_include()] + extra_include,
            library_dirs=library_dirs,
            libraries=libraries,
            extra_compile_args=cxx_flags,
            extra_link_args=["-fopenmp"] if openmp else [],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
