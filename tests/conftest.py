"""Shared test settings: CUDA-marked tests are skipped visibly (reported as SKIPPED with a
reason) where there is no GPU, never silently passed."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
