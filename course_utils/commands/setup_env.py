"""``python -m course_utils setup``: what ``make install`` does, on any system (Windows has no ``make``).

Run it from the repository's folder with the Python you want the course to use (3.11 or later)::

    python -m course_utils setup                 # .venv with torch, the course and its Jupyter kernel
    python -m course_utils setup --dry-run       # print the commands only

1. a virtual environment (``--venv``, default ``.venv``), unless one is there;
2. torch, only if that environment has none (the course never replaces the torch you have): ``TORCH_SPEC``
   (default ``torch==2.13.0``, what ``make install`` installs). PyPI's torch for Windows is a CPU build, so on Windows
   with an NVIDIA driver (``nvidia-smi`` answers) it comes from PyTorch's CUDA index instead (``TORCH_INDEX``);
3. ``requirements-dev.txt`` and the course itself (``pip install -e .``);
4. the Jupyter kernel ``python3`` inside the environment.

Nothing here imports torch or any other installed package: it runs with a bare Python.
"""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from ..paths import ROOT

TORCH_SPEC = "torch==2.13.0"  # as the Makefile's TORCH_SPEC
# PyTorch's index of CUDA 12.8 builds (https://pytorch.org/get-started/locally/ lists the one for your driver)
TORCH_INDEX = "https://download.pytorch.org/whl/cu128"


def venv_python(folder: Path, system: str = os.name) -> Path:
    """The Python of a virtual environment: ``Scripts\\python.exe`` on Windows (``system == "nt"``), else ``bin/python``."""
    return Path(folder) / ("Scripts/python.exe" if system == "nt" else "bin/python")


def has_nvidia() -> bool:
    """Whether an NVIDIA driver answers (``nvidia-smi -L`` lists a GPU)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        return "GPU" in subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def plan(folder: Path, has_torch: bool, system: str = os.name, nvidia: bool = False) -> list[list[str]]:
    """The commands of steps 2-4 for the environment in ``folder`` (step 1, the environment itself, comes first).

    Args:
        folder (`Path`): the virtual environment.
        has_torch (`bool`): whether it has torch already (then it is kept).
        system (`str`, defaults to ``os.name``): ``"nt"`` for Windows.
        nvidia (`bool`): whether an NVIDIA driver answers (on Windows: torch from ``TORCH_INDEX``).

    Returns:
        `list[list[str]]`: one argument list per command.
    """
    python = str(venv_python(folder, system))
    commands = []
    if not has_torch:
        torch = [python, "-m", "pip", "install", os.environ.get("TORCH_SPEC", TORCH_SPEC)]
        if system == "nt" and nvidia:
            torch += ["--index-url", os.environ.get("TORCH_INDEX", TORCH_INDEX)]
        commands.append(torch)
    commands.append([python, "-m", "pip", "install", "-r", str(ROOT / "requirements-dev.txt"), "-e", str(ROOT)])
    commands.append([python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"])
    return commands


def main(folder: str = ".venv", dry_run: bool = False) -> int:
    """Make or complete the environment in ``folder`` (relative to the repository); 0 when done, 1 when a step failed."""
    folder = Path(folder) if Path(folder).is_absolute() else ROOT / folder
    python = venv_python(folder)
    if not python.exists():
        print(f"1. a virtual environment: {folder}")
        if not dry_run:
            venv.create(folder, with_pip=True)
    has_torch = (
        python.exists() and subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0
    )
    for number, command in enumerate(plan(folder, has_torch, nvidia=has_nvidia()), start=2):
        print(f"{number}. {' '.join(command)}", flush=True)
        if not dry_run and subprocess.run(command).returncode != 0:
            print(
                f"step {number} failed (its own messages are above); fix it and run `python -m course_utils setup` "
                "again: finished steps are kept.",
                file=sys.stderr,
            )
            return 1
    if dry_run:
        print("\n(dry run: nothing was run)")
        return 0
    activate = folder / ("Scripts\\activate" if os.name == "nt" else "bin/activate")
    print(
        f"\nDone. Next: activate it ({activate if os.name == 'nt' else 'source ' + str(activate)}), then "
        "`python -m course_utils course` (every lesson headless, as `make course`) or `jupyter lab`."
    )
    return 0
