import os

import torch

# Triton kernels run on the CPU through Triton's interpreter where no GPU exists. It must
# be chosen before any @triton.jit function is created, so before sparsekit is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _default_backend():
    before = sparsekit.get_backend()
    yield
    sparsekit.set_backend(before)
