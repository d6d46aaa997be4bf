"""Shared fixtures: the tests run on the offline `tiny` profile on the CPU."""

import os
import subprocess
import sys

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
    """The small lookalike repositories, built once per test run: ``{repo id: folder}`` under one ``mirrors``
    folder (``next(iter(...)).parents[2]``) that tests/test_sd15_mirror.py serves and tests/test_lookalike.py and
    tests/test_gpu_check.py read."""
    from course_utils.models import lookalike

    return lookalike.build_lookalikes(tmp_path_factory.mktemp("lookalikes") / "mirrors", size="small")


COLAB_TORCH = "torch==2.13.0"  # the CPU build this machine installs from local disk (Colab: its own CUDA torch)
COLAB_IPYWIDGETS = "ipywidgets==7.7.1"  # the version Colab ships


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory):
    """A virtual environment as a fresh Colab runtime has it: a CPU torch and Colab's ipywidgets 7.7, no course.
    Built once per test run (pip's longest step) for tests/test_first_cell.py, whose cell installs the course into
    it, and tests/test_install.py, which replaces that with the wheel; each removes the course first, so either may
    run alone or first. Returns ``(folder, python, env)``: ``env`` has the venv first on PATH."""
    folder = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = str(folder / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))}
    env["PATH"] = f"{folder / 'bin'}{os.pathsep}{env['PATH']}"
    subprocess.run([python, "-m", "pip", "install", "-q", COLAB_TORCH, COLAB_IPYWIDGETS], check=True, env=env)
    return folder, python, env


def without_the_course(python: str, env: dict) -> None:
    """Uninstall ``course-utils`` from the venv of :func:`fresh_venv` (nothing happens where it is not installed)."""
    subprocess.run(
        [python, "-m", "pip", "uninstall", "-q", "-y", "course-utils"], check=True, env=env, capture_output=True
    )
