"""Builds sparsekit._C, the CPU kernels (pybind11 + OpenMP).

No -march/-m flags: each csrc/isa_*.cpp selects its own instruction set with a
target pragma and csrc/isa.cpp picks one at run time, so one wheel runs on every
x86-64 CPU (AVX-512, AVX2 or neither) and the extension never links libtorch.
"""

import os
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

sources = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".cpp"))
# headers too: the kernels live in csrc/*.h, and a change there must rebuild the extension
headers = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h"))

extra_compile = ["-O3", "-fopenmp", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas"]
extra_link = ["-fopenmp"]
if sys.platform == "darwin":  # Apple clang: OpenMP through libomp if present
    extra_compile = ["-O3", "-Xpreprocessor", "-fopenmp"]
    extra_link = ["-lomp"]
# SPARSEKIT_SANITIZE=1: AddressSanitizer and UndefinedBehaviorSanitizer, any undefined behaviour
# fatal (`make sanitize` builds this way into build/sanitize, apart from the normal build)
if os.environ.get("SPARSEKIT_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]
    extra_compile += sanitize
    extra_link += sanitize

ext = Pybind11Extension(
    "sparsekit._C",
    sources,
    include_dirs=["csrc"],
    depends=headers,
    cxx_std=17,
    extra_compile_args=extra_compile,
    extra_link_args=extra_link,
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
