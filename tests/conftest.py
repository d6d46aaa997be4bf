"""Shared fixtures: the tests run on the offline `tiny` profile on the CPU."""

import os

import pytest

os.environ.setdefault("COURSE_PROFILE", "tiny")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# What a file's tests cost, as a marker (pyproject.toml lists them): run one kind with e.g. `pytest -m mirror`.
KINDS = {
    "test_sd15_mirror.py": "mirror",  # the lookalike repositories behind olah
    "test_browser.py": "browser",  # headless Chromium
    "test_training.py": "training",  # training/'s stages, a few steps each
    "test_float16_lane.py": "notebooks",  # every lesson again in float16
    "test_first_cell.py": "install",  # fresh virtual environments, pip
    "test_install.py": "install",
}


def pytest_collection_modifyitems(config, items):
    """Every notebook cell nbval runs counts as slow (`make test-fast`, ``-m "not slow"``, skips the notebooks) and
    as ``notebooks``; each file of :data:`KINDS` gets its marker."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.notebooks)
        elif item.path.name in KINDS:
            item.add_marker(getattr(pytest.mark, KINDS[item.path.name]))


@pytest.fixture(scope="session")
def tiny_pipe():
    """The `tiny` text-to-image pipeline on the CPU (built once per test session)."""
    import course_utils as cu

    return cu.load_pipeline("text2img", profile="tiny", device="cpu")


@pytest.fixture(scope="session")
def lookalikes(tmp_path_factory):
    """The six small lookalike repositories, built once per test run: ``{repo id: folder}`` under one ``mirrors``
    folder (``next(iter(...)).parents[2]``) that tests/test_sd15_mirror.py serves and tests/test_lookalike.py and
    tests/test_gpu_check.py read."""
    from course_utils.models import lookalike

    return lookalike.build_lookalikes(tmp_path_factory.mktemp("lookalikes") / "mirrors", size="small")
