import os

import torch

# Triton kernels run on the CPU through Triton's interpreter where no GPU exists. It must
# be chosen before any @triton.jit function is created, so before sparsekit is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
try:
    from hypothesis import settings
except ImportError:  # only tests/test_properties.py needs it
    settings = None

import sparsekit  # noqa: E402,F401

# Hypothesis profiles (tests/test_properties.py): "ci", the default (`make test`: reproducible, well
# under two minutes for the file on 2 cores), and "full" (`make test-properties-full`), chosen with
# SPARSEKIT_HYPOTHESIS_PROFILE=full or pytest's --hypothesis-profile=full. No example database, so
# runs leave nothing in the tree; a failure prints the example and how to reproduce it.
if settings is not None:
    settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True, database=None, print_blob=True)
    settings.register_profile("full", max_examples=600, deadline=None, database=None, print_blob=True)
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
