"""The wheels a bare GPU machine lacks, for ``make gpu-check``: which they are, downloading them where pip works
(``python tools/gpu_check.py wheels``, ``make gpu-wheels``), and installing them there without network.

The GPU image (see docs/gpu-check.md) has torch, accelerate, transformers, huggingface_hub, safetensors, peft,
matplotlib, pillow, numpy, pytest, psutil, pygments, attrs, python-dateutil, ... but not diffusers, nbval or
Jupyter's kernel. The course's pins come from requirements*.txt; the versions of their dependencies are the
ones ``make install`` resolved for the course (tested with it). Left out on purpose: debugpy, jedi/parso,
widgetsnbextension and jupyterlab_widgets (optional at run time or front-end assets only: 12 MB).

Standard library only at import: ``course_utils.requirements`` (no third-party import either) is read when the
pins are.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
PINNED_FROM_REQUIREMENTS = ("diffusers", "peft", "nbval", "ipykernel")
DEPENDENCY_WHEELS = {
    "ipywidgets": "8.1.9",
    "ipython": "9.18.1",
    "ipython_pygments_lexers": "1.1.1",
    "matplotlib-inline": "0.2.2",
    "pexpect": "4.9.0",
    "ptyprocess": "0.7.0",
    "prompt_toolkit": "3.0.53",
    "wcwidth": "0.9.4",
    "stack-data": "0.6.3",
    "asttokens": "3.0.2",
    "executing": "2.3.0",
    "pure_eval": "0.2.4",
    "traitlets": "5.16.1",
    "comm": "0.2.3",
    "nest-asyncio2": "1.7.4",
    "pyzmq": "27.3.0",
    "tornado": "6.6.1",
    "jupyter_client": "8.10.0",
    "jupyter_core": "5.9.1",
    "platformdirs": "4.14.8",
    "nbformat": "5.11.1",
    "fastjsonschema": "2.22.3",
    "jsonschema": "4.26.0",
    "jsonschema-specifications": "2025.9.1",
    "referencing": "0.37.0",
    "rpds-py": "2026.9.1",
}
# The course pins these too, but the image has its own (transformers 5.17, huggingface_hub 1.33, which the course's
# earlier GPU runs used): 14 MB more than the 64 MiB a device call carries allows. `wheels --with-pins` adds them.
PIN_WHEELS = ("transformers", "huggingface_hub")
PIN_DEPENDENCY_WHEELS = {"httpx2": "2.16.2", "httpcore2": "2.16.2"}  # huggingface_hub 2's HTTP client
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_26_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)
CARRY_LIMIT_MIB = 64  # what a device call carries: the working tree and its `carry` paths
MIB = 2**20


def requirement_pins() -> dict:
    """The exact pins of the course's requirement files.

    Returns:
        `dict[str, str]`: ``{canonical name: version}`` of every ``name==version`` line of requirements*.txt
        (read by ``course_utils.requirements``).
    """
    from course_utils.requirements import requirement_pins as pins_of

    pins = {}
    for path in sorted(ROOT.glob("requirements*.txt")):
        pins.update({name: spec[2:] for name, spec in pins_of(path).items() if spec.startswith("==")})
    return pins


def wheel_specs(with_pins: bool = False) -> list[str]:
    """The wheels :func:`download_wheels` downloads.

    Args:
        with_pins (`bool`, defaults to `False`): also transformers and huggingface_hub at the course's pins
            (and huggingface_hub 2's HTTP client).

    Returns:
        `list[str]`: ``name==version`` of each, the course's pins first.
    """
    from course_utils.requirements import canonical

    pins = requirement_pins()
    names = PINNED_FROM_REQUIREMENTS + (PIN_WHEELS if with_pins else ())
    specs = [f"{name}=={pins[canonical(name)]}" for name in names]
    deps = dict(DEPENDENCY_WHEELS, **(PIN_DEPENDENCY_WHEELS if with_pins else {}))
    return specs + [f"{name}=={version}" for name, version in deps.items()]


def tree_mib() -> float:
    """What a device call carries without ``carry``: the tracked files and the untracked ones git does not ignore.

    Returns:
        `float`: their size in MiB.
    """
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    files = (ROOT / name for name in proc.stdout.split("\0") if name)
    return sum(f.stat().st_size for f in files if f.is_file()) / MIB


def download_wheels(dest: Path, with_pins: bool = False) -> list[Path]:
    """``pip download`` the wheels of :func:`wheel_specs` for CPython 3.12 on manylinux x86-64, no dependencies
    resolved, into a fresh ``dest``; prints each one's size.

    Args:
        dest (`Path`): the folder; emptied first (one version of each: two would stop the install).
        with_pins (`bool`, defaults to `False`): see :func:`wheel_specs`.

    Returns:
        `list[Path]`: the wheels.

    Raises:
        subprocess.CalledProcessError: pip failed (it said why).
    """
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    specs = wheel_specs(with_pins)
    cmd = [
        *(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"),
        *("--python-version", "3.12", "--implementation", "cp", "-d", str(dest)),
        *(a for p in PLATFORMS for a in ("--platform", p)),
        *specs,
    ]
    print(f"downloading {len(specs)} wheels into {dest} ...", flush=True)
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"), key=lambda w: w.stat().st_size, reverse=True)
    for w in wheels:
        print(f"  {w.stat().st_size / MIB:7.2f} MiB  {w.name}")
    return wheels


def install_wheels(site: Path, wheels_dir: Path = WHEELS) -> bool:
    """Install ``wheels_dir/*.whl`` into ``site`` without network and without dependencies (``pip --target``);
    once per set of wheels (a stamp in ``site`` names them). Torch is never among them.

    Args:
        site (`Path`): the folder to install into (put first on ``PYTHONPATH`` afterwards).
        wheels_dir (`Path`, defaults to ``.whl``): where :func:`download_wheels` put them.

    Returns:
        `bool`: `True` when ``site`` holds them, `False` when there are no wheels.

    Raises:
        subprocess.CalledProcessError: pip failed.
    """
    wheels = sorted(Path(wheels_dir).glob("*.whl"))
    if not wheels:
        return False
    stamp = site / ".gpu-check-wheels"
    names = "\n".join(w.name for w in wheels)
    if stamp.exists() and stamp.read_text() == names:
        return True
    print(
        f"installing {len(wheels)} wheels from {wheels_dir.name}/ into {site} (no network, no dependencies) ...",
        flush=True,
    )
    cmd = [
        *(sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"),
        *("--upgrade", "--target", str(site)),
        *(str(w) for w in wheels),
    ]
    subprocess.run(cmd, check=True)
    stamp.write_text(names)
    return True
