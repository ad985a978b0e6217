"""Every worker-side test trains on one torch thread: on two shared cores more threads only slow it down."""

from __future__ import annotations

import pytest

from tests.factories import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield
