import os

import torch

# Triton kernels run on the CPU through Triton's interpreter where no GPU exists. It must
# be chosen before any @triton.jit function is created, so before sparsekit is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import sparsekit  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _default_backend():
    before = sparsekit.get_backend()
    yield
    sparsekit.set_backend(before)
