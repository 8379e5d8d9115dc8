import os

import torch

# Triton kernels run on the CPU through Triton's interpreter where no GPU exists. It must
# be chosen before any @triton.jit function is created, so before sparsekit is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
try:
    from hypothesis import Phase, settings
except ImportError:  # only tests/test_properties.py needs it
    settings = None

import sparsekit  # noqa: E402,F401
from sparsekit import _ext  # noqa: E402

# `make sanitize` runs the tests on an instrumented copy of the package (SPARSEKIT_EXPECT_NATIVE:
# its directory): stop at once if another build of the extension was imported
_expected = os.environ.get("SPARSEKIT_EXPECT_NATIVE")
if _expected:
    _native = os.path.realpath(_ext.native().__file__)
    if not _native.startswith(os.path.realpath(_expected) + os.sep):
        raise RuntimeError(f"SPARSEKIT_EXPECT_NATIVE={_expected} but sparsekit._C was loaded from {_native}")


def pytest_report_header(config):
    return f"sparsekit._C: {_ext._C.__file__ if _ext.available() else f'not loaded ({_ext._LOAD_ERROR!r})'}"

# Hypothesis profiles (tests/test_properties.py), chosen with SPARSEKIT_HYPOTHESIS_PROFILE or pytest's
# --hypothesis-profile. "ci" (default, `make test`): 40 examples a test, reproducible, and no
# shrinking, which can take minutes per failure: a failure is reported as found, with the op, case,
# ISA and first differing output, and a @reproduce_failure blob. "full" (`make test-properties-full`):
# 600 examples a test, new ones each run, shrunk to a minimal example. No example database (nothing
# is written into the tree).
if settings is not None:
    settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                              print_blob=True, phases=(Phase.explicit, Phase.reuse, Phase.generate))
    settings.register_profile("full", max_examples=600, deadline=None, database=None, print_blob=True,
                              phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink))
    settings.load_profile(os.environ.get("SPARSEKIT_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _default_backend():
    before = sparsekit.get_backend()
    yield
    sparsekit.set_backend(before)
