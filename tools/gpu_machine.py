"""The machine ``make gpu-check`` runs on: is there an NVIDIA GPU, which Python runs the lessons (``.venv`` or this
one with the wheels of ``.whl/``), what it has (versions, GPU), and the environment its processes get.

Standard library only: this module runs in the bare Python that starts the check; torch and the course are only
ever imported by the processes it starts (the probe, the builds, the notebooks).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gpu_wheels import WHEELS, install_wheels

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, platform, sys
import torch, diffusers, transformers, huggingface_hub, nbval, ipykernel, IPython
info = dict(python=platform.python_version(), executable=sys.executable, torch=torch.__version__, cuda=torch.version.cuda,
            cuda_available=torch.cuda.is_available(), diffusers=diffusers.__version__, transformers=transformers.__version__,
            huggingface_hub=huggingface_hub.__version__, nbval=nbval.__version__, ipykernel=ipykernel.__version__,
            ipython=IPython.__version__)
try:
    import peft
    info["peft"] = peft.__version__
except ImportError:
    info["peft"] = None
if info["cuda_available"]:
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
print("PROBE " + json.dumps(info))
"""


class NoGpu(Exception):
    """There is no NVIDIA GPU to measure on; the message ends the sentence "this machine has none ..."."""


class MissingPackages(Exception):
    """No Python here has torch, diffusers, nbval and ipykernel together; the message says what each lacked."""


def nvidia_present() -> bool:
    """Whether an NVIDIA driver is visible (device node, /proc entry or nvidia-smi), checked without importing
    anything heavy. ``GPU_CHECK_ASSUME_NO_GPU=1`` answers `False` (the tests use it, so that they mean the same on
    a GPU machine).

    Returns:
        `bool`: `True` when there is one.
    """
    if os.environ.get("GPU_CHECK_ASSUME_NO_GPU"):
        return False
    return (
        any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version"))
        or shutil.which("nvidia-smi") is not None
    )


def probe(python: str, env: dict) -> tuple[dict | None, str]:
    """Versions and the GPU as another Python sees them (:data:`PROBE`, in a subprocess).

    Args:
        python (`str`): the interpreter.
        env (`dict`): its environment (:func:`base_env`).

    Returns:
        `tuple[dict | None, str]`: ``(info, "")``, ``info`` with ``torch``, ``cuda``, ``cuda_available``,
        ``diffusers``, ... and, with a GPU, ``gpu`` and ``gpu_memory_gib``; or ``(None, its last error line)``.
    """
    try:
        proc = subprocess.run([python, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, str(err)
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE ") :]), ""
    return None, (proc.stderr.strip().splitlines() or ["(no output)"])[-1]


def base_env(pythonpath: list[str]) -> dict:
    """The environment of every process the check starts.

    Args:
        pythonpath (`list[str]`): folders put first on ``PYTHONPATH`` (the wheels' site), then the repository.

    Returns:
        `dict`: this process's environment without its ``HF_*``, ``COURSE_*`` and ``GPU_CHECK_*`` settings,
        unbuffered, with matplotlib's ``Agg`` backend and no tokenizers parallelism.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "COURSE_", "GPU_CHECK_"))}
    paths = pythonpath + [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(
        PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false"
    )
    return env


def choose_python(site: Path, use_venv: bool = True, allow_cpu: bool = False) -> tuple[str, list[str], dict]:
    """The Python that runs the lessons: ``.venv`` if its torch has CUDA and the course's packages import, else
    this Python with the wheels of ``.whl/`` installed into ``site`` (torch stays the machine's).

    Args:
        site (`Path`): where the wheels are installed (:func:`gpu_wheels.install_wheels`).
        use_venv (`bool`, defaults to `True`): consider ``.venv`` (`False`: ``--no-venv``).
        allow_cpu (`bool`, defaults to `False`): accept a Python whose torch sees no GPU (the tests).

    Returns:
        `tuple[str, list[str], dict]`: ``(python, pythonpath, probe)``: the interpreter, what goes first on its
        ``PYTHONPATH`` (see :func:`base_env`), and what :func:`probe` found.

    Raises:
        NoGpu: every package imports, but torch sees no CUDA GPU.
        MissingPackages: no Python here has torch, diffusers, nbval and ipykernel together.
    """
    errors = []
    venv = ROOT / ".venv" / "bin" / "python"
    if venv.exists() and use_venv:
        info, err = probe(str(venv), base_env([]))
        if info and (info["cuda_available"] or allow_cpu):
            return str(venv), [], info
        errors.append(f".venv: {err or 'its torch sees no CUDA GPU'}")
    pythonpath = [str(site)] if install_wheels(Path(site)) else []
    info, err = probe(sys.executable, base_env(pythonpath))
    if info and (info["cuda_available"] or allow_cpu):
        return sys.executable, pythonpath, info
    if info:  # everything imports, but torch sees no GPU
        raise NoGpu(f"that torch {info['torch']} can use (torch.cuda.is_available() is False)")
    errors.append(f"{sys.executable}{' + ' + WHEELS.name + '/' if pythonpath else ''}: {err}")
    raise MissingPackages(
        "gpu-check: no Python here has torch, diffusers, nbval and ipykernel together:\n  "
        + "\n  ".join(errors)
        + "\nEither `make install` (with network), or, on a machine without network, bring the wheels: run "
        f"`make gpu-wheels` where pip works and copy {WHEELS.name}/ here (docs/gpu-check.md)."
    )


def nvidia_smi() -> dict:
    """The GPU as nvidia-smi describes it.

    Returns:
        `dict`: ``gpu`` (its name), ``driver`` and ``gpu_memory``; empty when there is no nvidia-smi or no GPU.
    """
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return {}
    name, driver, memory = ([p.strip() for p in lines[0].split(",")] + ["", "", ""])[:3]
    return dict(gpu=name, driver=driver, gpu_memory=memory)
