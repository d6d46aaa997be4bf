"""Check one seat before a workshop: ``python -m course_utils doctor [--json PATH]``.

One line per fact, each ending in ``OK``, a ``WARNING`` with what to do, or a ``PROBLEM`` (the seat
cannot run the course until it is fixed):

- device and driver: torch, CUDA (GPU, driver, CUDA version), Apple MPS, the dtype the course uses;
- room to work: free GPU memory, free RAM, free disk where the Hub cache and ``COURSE_MODELS_DIR`` live;
- the profile :func:`course_utils.models.registry.choose` picks here, and why;
- each `sd15` repository and single file: ``local`` (``COURSE_MODELS_DIR``), ``cached`` (the Hub
  cache), ``reachable`` (on ``HF_ENDPOINT``), ``missing`` (the Hub answered it has no such thing) or
  ``unreachable`` - looked up with the model layer's own functions (:mod:`course_utils.models.hub`);
- library versions against ``requirements.txt``, and the widget front end (lesson 3's slider).

The exit code is 0 whenever the course can run (the offline `tiny` profile always can), 1 only for a
real problem: a missing library, or a ``COURSE_DEVICE`` / ``COURSE_DTYPE`` / ``COURSE_PROFILE`` the seat cannot honour.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from ..errors import CourseError
from ..models import hub
from ..requirements import canonical, requirement_pins
from .checks import Check
from .doctor_models import check_models

# The libraries the notebooks import; requirements.txt pins all but torch (Colab keeps its own).
LIBRARIES = ("torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "peft", "safetensors", "ipywidgets")
GPU_FREE_MIN = 4 * 2**30  # sd15 pipelines peak at ~2.6-3.0 GiB in fp16 at 512x512 (README, measured on an H100)
RAM_FREE_MIN = 2 * 2**30  # tiny runs in well under this; sd15 on a CPU wants several times more
DISK_FREE_MIN = 10 * 2**30  # the sd15 downloads: several pipelines in fp16 plus a 2.1 GB single file


def gib(n: float | None) -> str:
    """``n`` bytes as ``"12.3 GiB"`` (``"unknown"`` for `None`)."""
    return "unknown" if n is None else f"{n / 2**30:.1f} GiB"


def nvidia_driver() -> str | None:
    """The NVIDIA driver version ``nvidia-smi`` reports, or `None` (no driver, no ``nvidia-smi``, or it hung)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def check_device() -> list[Check]:
    """torch, CUDA (GPU name, driver, CUDA version), MPS, and the device and dtype the course would use.

    Returns:
        `list[Check]`: a ``COURSE_DEVICE`` the seat cannot honour is a problem; no GPU is only a warning
        (the course runs on `tiny`).
    """
    import torch

    from ..device import _mps_available, describe_device, dtype_reason, get_device, get_dtype

    checks = [Check("device", "torch", f"{torch.__version__} (built for CUDA {torch.version.cuda or 'none'})")]
    driver = nvidia_driver()
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        checks.append(Check("device", "CUDA", f"{name}, driver {driver or '?'}, CUDA {torch.version.cuda}"))
    elif driver:
        checks.append(
            Check(
                "device",
                "CUDA",
                f"NVIDIA driver {driver}, but this torch cannot use it",
                "warning",
                "install a CUDA build of torch (https://pytorch.org/get-started/locally/)",
            )
        )
    else:
        checks.append(
            Check(
                "device",
                "CUDA",
                "no NVIDIA GPU ('Found no NVIDIA driver')",
                "warning",
                "fine for tiny; on Colab: Runtime > Change runtime type > T4 GPU",
            )
        )
    checks.append(Check("device", "MPS (Apple silicon)", "available" if _mps_available() else "not available"))
    try:
        device = get_device()
    except CourseError as err:
        return checks + [Check("device", "course device", str(err).splitlines()[0], "problem", "unset COURSE_DEVICE")]
    try:
        dtype = str(get_dtype(device)).replace("torch.", "")
    except CourseError as err:
        return checks + [Check("device", "course dtype", str(err).splitlines()[0], "problem", "unset COURSE_DTYPE")]
    checks.append(
        Check("device", "course device / dtype", f"{describe_device(device)} / {dtype} ({dtype_reason(device)})")
    )
    return checks


def free_ram() -> int | None:
    """Free RAM in bytes: ``MemAvailable`` from ``/proc/meminfo`` (Linux), else ``os.sysconf``; `None` if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent folder)."""
    path = Path(path).expanduser().resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_memory() -> list[Check]:
    """Free GPU memory (``torch.cuda.mem_get_info``), free RAM, and free disk for the Hub cache and ``COURSE_MODELS_DIR``."""
    import torch
    from huggingface_hub import constants

    checks = []
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        low = free < GPU_FREE_MIN
        checks.append(
            Check(
                "memory",
                "GPU memory free",
                f"{gib(free)} of {gib(total)}",
                "warning" if low else "ok",
                "close other notebooks / restart the kernel: sd15 needs ~3 GiB free" if low else "",
            )
        )
    ram = free_ram()
    low = ram is not None and ram < RAM_FREE_MIN
    checks.append(
        Check(
            "memory",
            "RAM free",
            gib(ram),
            "warning" if low else "ok",
            "close other programs: under 2 GiB free" if low else "",
        )
    )
    places = {"disk free (Hub cache)": constants.HF_HUB_CACHE}
    if os.environ.get("COURSE_MODELS_DIR"):
        places["disk free (COURSE_MODELS_DIR)"] = os.environ["COURSE_MODELS_DIR"]
    for name, place in places.items():
        free = free_disk(place)
        low = free < DISK_FREE_MIN and torch.cuda.is_available()
        checks.append(
            Check(
                "memory",
                name,
                f"{gib(free)} at {place}",
                "warning" if low else "ok",
                "free space or set HF_HOME elsewhere: the sd15 downloads need ~10 GiB" if low else "",
            )
        )
    return checks


def check_profile() -> list[Check]:
    """The profile :func:`course_utils.models.registry.choose` picks on this seat, and its reason."""
    from huggingface_hub import constants

    from ..models.registry import choose

    checks = [
        Check("profile", "Hub endpoint", f"{constants.ENDPOINT}{' (HF_HUB_OFFLINE=1)' if hub.hub_offline() else ''}")
    ]
    try:
        choice = choose()
    except CourseError as err:
        return checks + [
            Check(
                "profile",
                "profile",
                str(err).splitlines()[0],
                "problem",
                "unset or correct COURSE_PROFILE / COURSE_DEVICE",
            )
        ]
    return checks + [Check("profile", "profile", f"{choice.profile} ({choice.reason})")]


def installed(name: str) -> str | None:
    """The installed version of distribution ``name``, or `None`."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_libraries(pins: dict[str, str] | None = None) -> list[Check]:
    """Each library of :data:`LIBRARIES` against its pin in ``requirements.txt``: missing is a problem, another version a warning."""
    from packaging.specifiers import SpecifierSet

    pins = requirement_pins() if pins is None else pins
    checks = []
    for name in LIBRARIES:
        version, spec = installed(name), pins.get(canonical(name), "")
        wanted = f" (requirements.txt: {spec})" if spec else ""
        if version is None:
            checks.append(
                Check(
                    "libraries",
                    name,
                    "not installed" + wanted,
                    "problem",
                    "run `make install` (or `pip install -r requirements.txt -e .`)",
                )
            )
        elif spec and version not in SpecifierSet(spec):
            checks.append(
                Check(
                    "libraries",
                    name,
                    version + wanted,
                    "warning",
                    f"pip install '{name}{spec}' (other versions are untested)",
                )
            )
        else:
            checks.append(Check("libraries", name, version + wanted))
    checks.append(check_opencv())
    return checks


# The OpenCV packages that all install `cv2` (lesson 11's edge maps): any one of them will do, two overwrite each other.
OPENCV_PACKAGES = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


def check_opencv() -> Check:
    """OpenCV for lesson 11's edge maps: which of :data:`OPENCV_PACKAGES` is installed (a warning for none or two)."""
    found = [f"{name} {installed(name)}" for name in OPENCV_PACKAGES if installed(name)]
    if not found:
        return Check(
            "libraries",
            "opencv (cv2)",
            "not installed: lesson 11's edge maps need it",
            "warning",
            "pip install opencv-python-headless (or `make install`)",
        )
    if len(found) > 1:
        return Check(
            "libraries",
            "opencv (cv2)",
            ", ".join(found),
            "warning",
            "two OpenCV packages overwrite each other's cv2: keep one (Colab's opencv-python is fine)",
        )
    return Check("libraries", "opencv (cv2)", found[0])


def check_widgets() -> list[Check]:
    """The widget front end: ipywidgets, its JupyterLab / classic-notebook extensions, and which front end is installed."""
    lab, classic = installed("jupyterlab"), installed("notebook")
    colab = installed("google-colab")  # Colab's own front end renders widgets itself
    front = ", ".join(
        f for f, v in (("JupyterLab " + str(lab), lab), ("Notebook " + str(classic), classic), ("Colab", colab)) if v
    )
    checks = [
        Check(
            "widgets",
            "front end",
            front or "none (headless only: `make course` still works)",
            "ok" if front else "warning",
            "" if front else "pip install jupyterlab, or open the folder in VS Code",
        )
    ]
    ipywidgets = installed("ipywidgets")
    for name, needed in (("jupyterlab_widgets", lab), ("widgetsnbextension", classic)):
        version = installed(name)
        missing = version is None and ipywidgets and needed
        checks.append(
            Check(
                "widgets",
                name,
                version or "not installed",
                "warning" if missing else "ok",
                f"pip install {name} (lesson 3's slider shows as text without it)" if missing else "",
            )
        )
    return checks


def run_checks(timeout: float = 5.0) -> list[Check]:
    """Every check of this module, in report order."""
    return (
        check_device() + check_memory() + check_profile() + check_models(timeout) + check_libraries() + check_widgets()
    )


def report(checks: list[Check]) -> str:
    """The readable report: one section per topic, one line per check, and a verdict."""
    lines, section = [], None
    for check in checks:
        if check.section != section:
            section = check.section
            lines.append(f"{section}:")
        lines.append(str(check))
    problems = sum(c.status == "problem" for c in checks)
    warnings = sum(c.status == "warning" for c in checks)
    verdict = "this seat can NOT run the course" if problems else "this seat can run the course"
    lines.append(f"{verdict}: {problems} problem(s), {warnings} warning(s)")
    return "\n".join(lines)


def main(json_path=None, timeout: float = 5.0) -> int:
    """Check this seat, print the report, optionally write it as JSON; 1 when there is a problem, else 0.

    Args:
        json_path (`str` or `Path`, *optional*): where to write ``{"ok": ..., "checks": [...]}``.
        timeout (`float`, defaults to 5): seconds to wait for the Hub.

    Returns:
        `int`: the exit code.
    """
    checks = run_checks(timeout)
    print(report(checks), flush=True)
    ok = not any(c.status == "problem" for c in checks)
    if json_path:
        Path(json_path).write_text(json.dumps(dict(ok=ok, checks=[asdict(c) for c in checks]), indent=2))
        print(f"written to {json_path}")
    return 0 if ok else 1
