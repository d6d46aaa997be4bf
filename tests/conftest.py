"""Shared fixtures: the tests run on the offline `tiny` profile on the CPU."""
import os

import pytest

os.environ.setdefault("COURSE_PROFILE", "tiny")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """Every notebook cell nbval runs counts as slow: `make test-fast` (``-m "not slow"``) skips the notebooks."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_pipe():
    """The `tiny` text-to-image pipeline on the CPU (built once per test session)."""
    import course_utils as cu

    return cu.load_pipeline("text2img", profile="tiny", device="cpu")
