"""Shared fixtures: the tests run on the offline `tiny` profile on the CPU."""
import os

import pytest

os.environ.setdefault("COURSE_PROFILE", "tiny")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_pipe():
    """The `tiny` text-to-image pipeline on the CPU (built once per test session)."""
    import course_utils as cu

    return cu.load_pipeline("text2img", profile="tiny", device="cpu")
