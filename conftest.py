"""Shared by every test, the doctests of README.md and docs/ included."""

import pytest


@pytest.fixture(autouse=True)
def _doc_examples_on_one_thread(request):
    """Doc examples build and count models: many batch-1 passes, which on a small busy CPU run several
    times faster on one thread than on torch's default pool (see compress.bench.torch_threads)."""
    from _pytest.doctest import DoctestItem

    if not isinstance(request.node, DoctestItem):
        yield
        return
    from compress.bench import torch_threads

    with torch_threads(1):
        yield
