"""Installs that match the truth: a wheel built from the repository holds every subpackage and draws a `tiny` picture
in a fresh virtual environment; ``python -m course_utils setup`` plans the same steps as ``make install``."""

import os
import subprocess
import sys
import zipfile

import pytest
from conftest import without_the_course

from course_utils.commands import setup_env
from course_utils.paths import ROOT

DRAW = """
import course_utils, course_utils.models.registry
import course_utils as cu
print("from", course_utils.__file__)
pipe = cu.load_pipeline("text2img", profile="tiny", device="cpu")
image = pipe(cu.prompt("main", "tiny"), num_inference_steps=5, **{k: v for k, v in cu.default_settings("tiny").items()
                                                                 if k != "num_inference_steps"}).images[0]
print("DRAWN", image.size, cu.world.classify(image)["shape"])
"""


@pytest.mark.slow
def test_wheel_installs_every_subpackage_and_draws_a_tiny_picture(tmp_path, fresh_venv):
    """The wheel holds every subpackage; installed into a fresh venv (a CPU torch in it: the course never picks torch
    for you), its dependencies are met and it draws, outside the repository, with and without the repository's data.
    The venv is the one tests/test_first_cell.py uses (:func:`conftest.fresh_venv`): whatever course is in it is
    removed first, and ``pip check`` then holds the wheel's own list of dependencies against what is installed."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("course_utils-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "course_utils/__init__.py",
        "course_utils/models/__init__.py",
        "course_utils/models/registry.py",
        "course_utils/models/configs.py",
    ):
        assert module in names, module
    folder, python, venv_env = fresh_venv
    without_the_course(python, venv_env)
    for command in (["install", "-q", str(wheel)], ["check"]):
        proc = subprocess.run(
            [python, "-m", "pip", *command], env=venv_env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    env = {k: v for k, v in venv_env.items() if not k.startswith("COURSE_")}
    env.update(COURSE_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    # outside the repository (so its course_utils/ cannot be imported by accident), with and without its data
    without = subprocess.run([python, "-c", DRAW], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert without.returncode != 0 and "COURSE_DATA" in without.stderr, without.stderr[-2000:]
    env["COURSE_DATA"] = str(ROOT / "data")
    proc = subprocess.run([python, "-c", DRAW], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(folder) in proc.stdout and "DRAWN (64, 64)" in proc.stdout, proc.stdout


def test_setup_plans_what_make_install_does_on_every_system(tmp_path):
    """``python -m course_utils setup``: the Makefile's install steps; on Windows the venv's Scripts\\python.exe and,
    with an NVIDIA driver, torch from PyTorch's CUDA index (PyPI's Windows torch is a CPU build)."""

    folder = tmp_path / ".venv"
    linux = setup_env.plan(folder, has_torch=False, system="posix", nvidia=True)
    assert linux[0] == [
        str(folder / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "torch==2.13.0",
    ]  # Linux: PyPI's CUDA torch
    assert linux[1][-4:] == ["-r", str(ROOT / "requirements-dev.txt"), "-e", str(ROOT)]
    assert linux[2][-5:] == ["ipykernel", "install", "--sys-prefix", "--name", "python3"]
    windows = setup_env.plan(folder, has_torch=False, system="nt", nvidia=True)
    assert windows[0][0].endswith("Scripts/python.exe") and windows[0][-2:] == ["--index-url", setup_env.TORCH_INDEX]
    assert "--index-url" not in setup_env.plan(folder, has_torch=False, system="nt", nvidia=False)[0]
    assert len(setup_env.plan(folder, has_torch=True, system="nt", nvidia=True)) == 2  # a torch already there is kept
    # the Makefile's TORCH_SPEC default is the same
    assert f"TORCH_SPEC ?= {setup_env.TORCH_SPEC}" in (ROOT / "Makefile").read_text()
    # from a bare Python (no torch, nothing installed): the CLI answers, and a dry run changes nothing
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.modules['torch'] = None; "
            "from course_utils.commands.cli import main; main(['setup', '--dry-run', '--venv', sys.argv[1]])",
            str(folder),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"1. a virtual environment: {folder}" in proc.stdout and "ipykernel install" in proc.stdout
    assert "dry run" in proc.stdout and not folder.exists()
