"""Builds sparsekit._C: the CPU kernels and their registration with PyTorch's dispatcher.

csrc/ mirrors the Python slices: csrc/<format>/ holds that format's kernel header, its per-ISA
instantiations (kernel_<isa>.cpp) and its registration (register.cpp); csrc/common/ the vector
types, the scratch allocator, the checks, the ISA detection and the library's one TORCH_LIBRARY
block. Every .cpp under csrc/ is compiled: a new format is one new folder, nothing to list here.

No -march/-m flags: each kernel_<isa>.cpp selects its own instruction set with a target pragma
(common/instantiate.h) and common/isa.cpp picks one at run time, so one build runs on every
x86-64 CPU (AVX-512, AVX2 or neither). The extension links libtorch (the C++ API: registration
and autograd), so it is built against the torch it runs with.
"""

import glob
import os
import sys

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
headers = sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True))

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

ext = CppExtension(
    "sparsekit._C",
    sources,
    include_dirs=[os.path.abspath("csrc")],
    depends=headers,
    extra_compile_args={"cxx": extra_compile},
    extra_link_args=extra_link,
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExtension})
