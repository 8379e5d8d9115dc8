import os

import pytest

import sparsekit  # noqa: F401  (registers the ops)


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", help="small shapes, few rounds (CI: benchmarks cannot rot)")


def pytest_configure(config):
    if config.getoption("--quick"):
        os.environ["SPARSEKIT_BENCH_QUICK"] = "1"


@pytest.fixture(autouse=True)
def _no_grad():
    import torch

    with torch.no_grad():
        yield
