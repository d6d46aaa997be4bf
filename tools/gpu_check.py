"""The GPU validation run (``make gpu-check``): every lesson under nbval on `tiny` and on full-size `sd15`,
with each notebook's wall time and peak GPU memory, the bench, and a report (``docs/gpu-report.md`` + ``.json``).

    python tools/gpu_check.py                      # on a CUDA machine: everything (docs/gpu-report.*)
    python tools/gpu_check.py --profile sd15 --notebooks 03 06
    python tools/gpu_check.py wheels --dest .whl   # here, with network: the wheels a bare GPU machine lacks

What it does, in order (``docs/gpu-check.md`` says why):

1. no NVIDIA GPU -> exit 2 at once with what to run instead (``make test``); nothing heavy is imported;
2. picks the Python: ``.venv`` when it has a CUDA torch and the course's packages, else this Python with
   the wheels of ``.whl/`` installed without network into ``--site`` (``pip --target``; torch is never
   reinstalled: it stays the machine's);
3. starts building SD 1.5's full-size lookalikes (random weights, real sizes, the files
   ``python -m course_utils download sd15`` would fetch from ``python -m course_utils hub --serve --size full``)
   into a ``COURSE_MODELS_DIR`` folder, in background processes, while
4. every notebook runs under nbval on `tiny`, one kernel (and one pytest) per notebook, then
5. every notebook on `sd15` from that folder, offline (``HF_HUB_OFFLINE=1``, an empty ``HF_HOME``);
6. ``python -m course_utils bench --full --json ...`` (a missing or failing bench is recorded, not fatal);
7. writes the report; exits 1 when a notebook failed or one peaked above ``--limit-gib`` (14 GiB: a 16 GB T4
   leaves about 15 to PyTorch).

Peak GPU memory is measured inside each notebook's kernel: an IPython startup file (in a temporary
``IPYTHONDIR``) registers a ``post_run_cell`` hook that writes ``torch.cuda.max_memory_allocated()`` (and
``max_memory_reserved()``) to the file ``GPU_CHECK_PEAK_FILE`` names after every cell. nbval stops its
kernels with ``shutdown_kernel(now=True)`` (a kill), so an ``atexit`` hook would never run; the file is
always as new as the last cell. Each notebook gets a fresh kernel process, so the peak starts at zero.

``--allow-cpu`` (tests only) runs the same way on a CPU and records the peak as n/a.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
WHEELS = ROOT / ".whl"
LIMIT_GIB = 14.0
ESTIMATES = (
    ROOT / "docs" / "gpu-memory.json"
)  # `python -m course_utils gpu-memory --json`: each lesson's sd15 peak, estimated


def estimated_gib(notebook: str, profile: str) -> float | None:
    """The estimate of ``docs/gpu-memory.json`` for a notebook on `sd15` (512x512, float16); `None` elsewhere."""
    if profile != "sd15" or not ESTIMATES.exists():
        return None
    rows = {r["lesson"]: r["peak_gib"] for r in json.loads(ESTIMATES.read_text())["lessons"]}
    return rows.get(notebook[:2])


GIB = 2**30
PROFILES = ("tiny", "sd15")

NO_GPU_MESSAGE = """\
make gpu-check needs an NVIDIA GPU with CUDA (it measures each lesson's peak GPU memory), and this machine has none{why}.
Instead, here:
  make test        # unit tests + every notebook through nbval on `tiny` + the equivalence tests (CPU)
  make test-fast   # the same without the slow tests, under a minute
Run `make gpu-check` on a CUDA machine (after `make install`, or on a bare one with the wheels of `make gpu-wheels`:
see docs/gpu-check.md)."""

# --- the wheels a bare GPU machine lacks ------------------------------------------------------------------------
# The GPU image (see docs/gpu-check.md) has torch, accelerate, transformers, huggingface_hub, safetensors, peft,
# matplotlib, pillow, numpy, pytest, psutil, pygments, attrs, python-dateutil, ... but not diffusers, nbval or
# Jupyter's kernel. The course's pins come from requirements*.txt; the versions of their dependencies are the
# ones `make install` resolved for the course (tested with it). Left out on purpose: debugpy, jedi/parso,
# widgetsnbextension and jupyterlab_widgets (optional at run time or front-end assets only: 12 MB).
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
CARRY_LIMIT_MIB = 64


def requirement_pins() -> dict:
    """``{canonical name: version}`` of every ``name==version`` line of requirements*.txt (course_utils.requirements)."""
    from course_utils.requirements import requirement_pins as pins_of

    pins = {}
    for path in sorted(ROOT.glob("requirements*.txt")):
        pins.update({name: spec[2:] for name, spec in pins_of(path).items() if spec.startswith("==")})
    return pins


def wheel_specs(with_pins: bool = False) -> list[str]:
    """``name==version`` of every wheel ``wheels`` downloads."""
    from course_utils.requirements import canonical

    pins = requirement_pins()
    names = PINNED_FROM_REQUIREMENTS + (PIN_WHEELS if with_pins else ())
    specs = [f"{name}=={pins[canonical(name)]}" for name in names]
    deps = dict(DEPENDENCY_WHEELS, **(PIN_DEPENDENCY_WHEELS if with_pins else {}))
    return specs + [f"{name}=={version}" for name, version in deps.items()]


def tree_mib() -> float:
    """MiB of what a device call carries without ``carry``: tracked files and untracked ones git does not ignore."""
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    files = (ROOT / name for name in proc.stdout.split("\0") if name)
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def download_wheels(dest: Path, with_pins: bool = False) -> int:
    """``pip download`` the wheels for CPython 3.12 on manylinux x86-64 (no dependencies resolved) into ``dest``."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)  # one version of each: two would stop the install
    dest.mkdir(parents=True)
    specs = wheel_specs(with_pins)
    cmd = (
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "-d",
            str(dest),
        ]
        + [a for p in PLATFORMS for a in ("--platform", p)]
        + specs
    )
    print(f"downloading {len(specs)} wheels into {dest} ...", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode:
        return proc.returncode
    wheels = sorted(dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) / 2**20
    for w in sorted(wheels, key=lambda w: w.stat().st_size, reverse=True):
        print(f"  {w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    tree = tree_mib()
    print(
        f"{len(wheels)} wheels, {total:.1f} MiB in all. With the working tree ({tree:.1f} MiB) a device call carries "
        f"{tree + total:.1f} of its {CARRY_LIMIT_MIB} MiB (name .whl in its carry)."
    )
    if tree + total > CARRY_LIMIT_MIB:
        print(f"WARNING: over the {CARRY_LIMIT_MIB} MiB a device call carries; drop --with-pins.", file=sys.stderr)
        return 1
    return 0


# --- the machine ------------------------------------------------------------------------------------------------
def nvidia_present() -> bool:
    """An NVIDIA driver is visible (device node, /proc entry or nvidia-smi), checked without importing anything heavy.

    ``GPU_CHECK_ASSUME_NO_GPU=1`` answers False (the tests use it, so that they mean the same on a GPU machine).
    """
    if os.environ.get("GPU_CHECK_ASSUME_NO_GPU"):
        return False
    return (
        any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version"))
        or shutil.which("nvidia-smi") is not None
    )


def no_gpu(why: str = "") -> int:
    print(NO_GPU_MESSAGE.format(why=why), file=sys.stderr, flush=True)
    return 2


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


def probe(python: str, env: dict) -> tuple[dict | None, str]:
    """Versions and the GPU as ``python`` (with ``env``) sees them, or ``(None, its error)``."""
    try:
        proc = subprocess.run([python, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, str(err)
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE ") :]), ""
    return None, (proc.stderr.strip().splitlines() or ["(no output)"])[-1]


def install_wheels(site: Path) -> bool:
    """Install ``.whl/*.whl`` into ``site`` without network and without dependencies (once per set of wheels)."""
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        return False
    stamp = site / ".gpu-check-wheels"
    names = "\n".join(w.name for w in wheels)
    if stamp.exists() and stamp.read_text() == names:
        return True
    print(
        f"installing {len(wheels)} wheels from {WHEELS.name}/ into {site} (no network, no dependencies) ...", flush=True
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--upgrade",
            "--target",
            str(site),
        ]
        + [str(w) for w in wheels],
        check=True,
    )
    stamp.write_text(names)
    return True


def base_env(pythonpath: list[str]) -> dict:
    """This process's environment without HF_*/COURSE_* settings, with ``pythonpath`` (+ the repository) first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "COURSE_", "GPU_CHECK_"))}
    paths = pythonpath + [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(
        PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false"
    )
    return env


def choose_python(args) -> tuple[str, list[str], dict]:
    """``(python, pythonpath, probe)``: ``.venv`` if it has CUDA torch and the course, else this Python (+ wheels).

    Raises:
        SystemExit: 2 when no Python sees a GPU (without ``--allow-cpu``), 3 when the packages are missing.
    """
    errors = []
    venv = ROOT / ".venv" / "bin" / "python"
    if venv.exists() and not args.no_venv:
        info, err = probe(str(venv), base_env([]))
        if info and (info["cuda_available"] or args.allow_cpu):
            return str(venv), [], info
        errors.append(f".venv: {err or 'its torch sees no CUDA GPU'}")
    pythonpath = []
    if install_wheels(Path(args.site)):
        pythonpath = [str(Path(args.site))]
    info, err = probe(sys.executable, base_env(pythonpath))
    if info and (info["cuda_available"] or args.allow_cpu):
        return sys.executable, pythonpath, info
    if info:  # everything imports, but torch sees no GPU
        raise SystemExit(no_gpu(f" that torch {info['torch']} can use (torch.cuda.is_available() is False)"))
    errors.append(f"{sys.executable}{' + ' + WHEELS.name + '/' if pythonpath else ''}: {err}")
    print(
        "gpu-check: no Python here has torch, diffusers, nbval and ipykernel together:\n  "
        + "\n  ".join(errors)
        + f"\nEither `make install` (with network), or, on a machine without network, bring the wheels: run "
        f"`make gpu-wheels` where pip works and copy {WHEELS.name}/ here (docs/gpu-check.md).",
        file=sys.stderr,
    )
    raise SystemExit(3)


def nvidia_smi() -> dict:
    """The GPU's name and driver from nvidia-smi (empty when there is none)."""
    try:
        out = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if not out:
        return {}
    name, driver, memory = ([p.strip() for p in out[0].split(",")] + ["", "", ""])[:3]
    return dict(gpu=name, driver=driver, gpu_memory=memory)


# --- the full-size lookalikes as a COURSE_MODELS_DIR folder ----------------------------------------------------------
BUILD_GROUPS = (  # one background process each, the largest first
    ("stable-diffusion-v1-5/stable-diffusion-v1-5",),
    ("gsdf/Counterfeit-V2.5", "gsdf/EasyNegative", "latent-consistency/lcm-lora-sdv1-5"),
    ("stable-diffusion-v1-5/stable-diffusion-inpainting",),
    ("stabilityai/stable-diffusion-x4-upscaler",),
)


def wanted_files(repo_id: str) -> tuple[bool, set[str]]:
    """``(pipeline, single files)``: whether ``python -m course_utils download sd15`` fetches ``repo_id``'s pipeline
    folders, and which of its single files it fetches."""
    from course_utils.models import hub

    singles = {
        f
        for r, f in (
            (hub.COUNTERFEIT_REPO, hub.COUNTERFEIT_FILE),
            (hub.EASYNEGATIVE_REPO, hub.EASYNEGATIVE_FILE),
            (hub.LCM_LORA_REPO, hub.LCM_LORA_FILE),
        )
        if r == repo_id
    }
    return repo_id in set(hub.SD15_REPOS.values()), singles


def keep(files: list[str], pipeline: bool, singles: set[str]) -> set[str]:
    """The files of ``files`` (relative, ``/``-separated) the download command keeps: the pipeline's files as
    ``hub.download_plan`` picks them from the file list (the fp16 variant where there is one), plus the named single files."""
    from course_utils.models import hub

    kept = set(hub.download_plan(files, "fp16")[0]) if pipeline else set()
    return kept | (set(files) & singles)


def build_repo(repo_id: str, models: Path, size: str) -> Path:
    """Write ``models/<repo_id>``: the lookalike's own writer (``course_utils.models.lookalike``), skipping the single
    files nobody fetches, then only the files the download command keeps. Kept when its stamp is current."""
    from unittest import mock

    from course_utils.models import lookalike, original_layout

    spec = lookalike.lookalikes()[repo_id]
    target = models / repo_id
    stamp = f"{lookalike.stamp(spec, size)} {hash_of(Path(__file__))}"
    if (target / ".gpu-check-stamp").is_file() and (target / ".gpu-check-stamp").read_text() == stamp:
        return target
    pipeline, singles = wanted_files(repo_id)
    save_single_file = original_layout.save_single_file

    def only_wanted(pipe, path, *a, **kw):
        if Path(path).name in singles:
            return save_single_file(pipe, path, *a, **kw)
        return None

    tmp = target.with_name(target.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with mock.patch.object(original_layout, "save_single_file", only_wanted), lookalike.quiet():
        spec.write(tmp, size)
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    kept = keep(files, pipeline, singles)
    for name in set(files) - kept:
        (tmp / name).unlink()
    for folder in sorted((p for p in tmp.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    (tmp / ".gpu-check-stamp").write_text(stamp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def hash_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def build_main(args) -> int:
    """``build-models``: build the named repositories (one background process of the run)."""
    import torch

    torch.set_num_threads(args.threads)
    for repo in args.repos:
        start = time.perf_counter()
        folder = build_repo(repo, Path(args.out), args.size)
        gib = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / GIB
        print(f"built {repo}: {gib:.2f} GiB in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


class Builds:
    """The background processes that build the models folder (started at once, waited for before `sd15`)."""

    def __init__(self, python: str, env: dict, models: Path, size: str, logs: Path, jobs: int):
        self.start, self.procs, self.models = time.perf_counter(), [], models
        models.mkdir(parents=True, exist_ok=True)
        cores = os.cpu_count() or 2
        groups = [list(g) for g in BUILD_GROUPS]
        while len(groups) > max(1, jobs):  # fewer processes: merge the two smallest groups
            groups[-2] += groups.pop()
        threads = max(1, cores // (2 * len(groups)))  # half the cores: the `tiny` notebooks run meanwhile
        free = shutil.disk_usage(models).free / GIB
        if size == "full" and free < 40:  # ~15 GiB kept, ~35 GiB while the writers also write the fp32 files
            print(
                f"WARNING: {free:.0f} GiB free under {models}; the full-size build needs up to ~35 GiB at once "
                "(--build-jobs 2 needs less, --work elsewhere).",
                flush=True,
            )
        for i, group in enumerate(groups):
            log = open(logs / f"build-{i}.log", "w")
            cmd = [
                python,
                str(Path(__file__).resolve()),
                "build-models",
                "--out",
                str(models),
                "--size",
                size,
                "--threads",
                str(threads),
                *group,
            ]
            self.procs.append(
                (subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log, group)
            )
        print(
            f"building the {size}-size lookalikes into {models} in {len(groups)} background processes "
            f"({threads} threads each; logs: {logs}/build-*.log)",
            flush=True,
        )

    def wait(self) -> tuple[bool, float, str]:
        """``(ok, seconds since the start, error)``."""
        errors = []
        for proc, log, group in self.procs:
            proc.wait()
            log.close()
            if proc.returncode:
                tail = Path(log.name).read_text(errors="replace").strip().splitlines()[-5:]
                errors.append(f"{', '.join(group)}: exit {proc.returncode}: " + " | ".join(tail))
        seconds = time.perf_counter() - self.start
        return not errors, seconds, "; ".join(errors)

    def kill(self):
        for proc, log, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


# --- notebooks ----------------------------------------------------------------------------------------------------
STARTUP = '''"""gpu-check: after every cell, write this kernel's peak GPU memory to $GPU_CHECK_PEAK_FILE (atomically)."""
def _gpu_check_install():
    import json, os, sys
    path = os.environ.get("GPU_CHECK_PEAK_FILE")
    if not path:
        return
    state = dict(cells=0, peak_bytes=0, reserved_bytes=0, peak_cell=0, cuda=False)

    def after_cell(result=None):
        state["cells"] += 1
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = True
            peak = torch.cuda.max_memory_allocated()
            if peak > state["peak_bytes"]:
                state["peak_bytes"], state["peak_cell"] = peak, state["cells"]
            state["reserved_bytes"] = max(state["reserved_bytes"], torch.cuda.max_memory_reserved())
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)

    get_ipython().events.register("post_run_cell", after_cell)
    after_cell()  # the file exists as soon as the kernel does (cells counts the startup as 1)


_gpu_check_install()
del _gpu_check_install
'''


def write_startup(ipython_dir: Path) -> Path:
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-gpu-check.py").write_text(STARTUP)
    return ipython_dir


def find_notebooks(selected: list[str] | None, folder: Path = NOTEBOOKS) -> list[Path]:
    """Every lesson notebook (``notebooks/NN_*.ipynb``, lesson 09 and later included), or those whose name
    starts with one of ``selected`` (``01``, ``03_denoising_loop``, a path); ``folder``: another folder of them
    (``--notebooks-dir``, e.g. the tests' small synthetic notebook)."""
    folder = Path(folder)
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not selected:
        return paths
    chosen = [p for p in paths if any(p.name.startswith(Path(s).name.removesuffix(".ipynb")) for s in selected)]
    missing = [s for s in selected if not any(p.name.startswith(Path(s).name.removesuffix(".ipynb")) for p in paths)]
    if missing:
        raise SystemExit(f"gpu-check: no notebook matches {missing} in {folder}")
    return chosen


def profile_env(env: dict, profile: str, work: Path, models: Path | None, settings: str) -> dict:
    env = dict(
        env,
        COURSE_PROFILE=profile,
        COURSE_STRICT_WARNINGS="1",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(work / "hf"),
        IPYTHONDIR=str(write_startup(work / "ipython")),
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    if models is not None:
        env["COURSE_MODELS_DIR"] = str(models)
    if settings:
        env["COURSE_SETTINGS"] = settings
    return env


def run_logged(cmd: list[str], env: dict, log: Path, timeout: float) -> int | None:
    """Run ``cmd`` in its own process group with its output in ``log``; its exit code, or None when it ran past
    ``timeout`` (then the whole group - pytest and its kernel, the bench and its workers - is killed)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:  # timed out, or Ctrl-C
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_notebook(python: str, path: Path, profile: str, env: dict, work: Path, timeout: int) -> dict:
    """One notebook under nbval in its own pytest and kernel: ``row`` with seconds, peak memory and the outcome."""
    peak_file = work / "peaks" / f"{profile}-{path.stem}.json"
    peak_file.parent.mkdir(parents=True, exist_ok=True)
    peak_file.unlink(missing_ok=True)
    log = work / "logs" / f"{profile}-{path.stem}.log"
    cmd = [
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "nbval.plugin",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-current-env",
        "--nbval-cell-timeout",
        str(timeout),
        str(path),
    ]
    start = time.perf_counter()
    rc = run_logged(cmd, dict(env, GPU_CHECK_PEAK_FILE=str(peak_file)), log, timeout + 60)
    seconds = time.perf_counter() - start
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    peak = json.loads(peak_file.read_text()) if peak_file.exists() else {}
    row = dict(
        notebook=path.stem,
        profile=profile,
        seconds=round(seconds, 1),
        passed=rc == 0,
        status="passed" if rc == 0 else ("timeout" if rc is None else "failed"),
        summary=lines[-1].strip("= ") if lines else "",
        cells=peak.get("cells"),
        peak_cell=peak.get("peak_cell"),
        peak_gib=round(peak["peak_bytes"] / GIB, 3) if peak.get("cuda") else None,
        reserved_gib=round(peak["reserved_bytes"] / GIB, 3) if peak.get("cuda") else None,
        estimate_gib=estimated_gib(path.stem, profile),
        log=str(log),
    )
    if not row["passed"]:
        row["error"] = "\n".join(lines[-25:])
    return row


def over_limit(row: dict, limit_gib: float = LIMIT_GIB) -> bool:
    """The notebook's peak GPU memory (allocated by PyTorch) is above ``limit_gib`` (n/a never is)."""
    return row.get("peak_gib") is not None and row["peak_gib"] > limit_gib


def problems(rows: list[dict], limit_gib: float = LIMIT_GIB) -> list[str]:
    """What makes the run fail: notebooks that did not pass, and peaks above the limit."""
    out = []
    for r in rows:
        if not r["passed"]:
            out.append(f"{r['notebook']} on {r['profile']}: {r['status']} ({r.get('summary', '')})")
        if over_limit(r, limit_gib):
            out.append(f"{r['notebook']} on {r['profile']}: peak {r['peak_gib']:.2f} GiB > {limit_gib:g} GiB")
    return out


# --- the report ---------------------------------------------------------------------------------------------------
DEFAULT_SETTINGS = "the lessons' own (sd15: 512x512, 50 steps)"


def fmt_gib(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write ``gpu-report.json`` (``report`` as it is) and ``gpu-report.md`` (the table and the machine) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = report.get("limit_gib", LIMIT_GIB)
    rows = report["rows"]
    m = report.get("machine", {})
    md = [
        "# GPU validation run",
        "",
        f"Written by `make gpu-check` (`tools/gpu_check.py`, see `docs/gpu-check.md`) on {report['date']}. "
        "Do not edit: run it again.",
        "",
        (
            f"- GPU: {m['gpu']} ({m.get('gpu_memory', m.get('gpu_memory_gib', '?'))}), driver {m.get('driver', 'n/a')}, "
            f"CUDA {m.get('cuda') or 'n/a'}"
        )
        if m.get("gpu")
        else "- GPU: none (a CPU run, `--allow-cpu`: peaks n/a)",
        f"- torch {m.get('torch')}, diffusers {m.get('diffusers')}, transformers {m.get('transformers')}, "
        f"huggingface_hub {m.get('huggingface_hub')}, peft {m.get('peft')}, Python {m.get('python')}, {m.get('cpus')} CPU cores",
        f"- `tiny`: the course's models in `data/tiny`. `sd15`: {report.get('sd15_source', 'not run')}",
        f"- settings: {report.get('settings') or DEFAULT_SETTINGS}; each notebook in its own "
        "kernel under `pytest --nbval-lax`; seconds = the whole pytest run (kernel start and imports included); "
        f"peak = `torch.cuda.max_memory_allocated()` in that kernel; limit {limit:g} GiB (a 16 GB T4 leaves about 15); "
        "estimate = `docs/gpu-memory.json` (`python -m course_utils gpu-memory`: the heaviest cell on `sd15` at "
        "512x512 in float16, counted on fake tensors without a GPU)",
        f"- whole run: {report.get('total_seconds', 0):.0f} s",
        "",
        "| notebook | profile | seconds | peak GiB | estimate GiB | reserved GiB | result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        result = "pass" if r["passed"] else r["status"].upper()
        if over_limit(r, limit):
            result += f" - OVER {limit:g} GiB"
        md.append(
            f"| `{r['notebook']}` | {r['profile']} | {r['seconds']:.1f} | {fmt_gib(r.get('peak_gib'))} | "
            f"{fmt_gib(r.get('estimate_gib'))} | {fmt_gib(r.get('reserved_gib'))} | {result} |"
        )
    found = problems(rows, limit)
    md += ["", "**Result: " + ("all passed, every peak within the limit.**" if not found else "FAILED.**")]
    md += [f"- {p}" for p in found]
    bench = report.get("bench") or {}
    md += [
        "",
        "## Bench",
        "",
        f"`python -m course_utils bench --full`: {bench.get('status', 'not run')}"
        + (f" ({bench['seconds']:.0f} s)" if bench.get("seconds") and "timed out" not in bench["status"] else ""),
    ]
    if bench.get("note"):
        md += ["", bench["note"]]
    if bench.get("output"):
        md += ["", "```", bench["output"].rstrip(), "```"]
    md_path, json_path = out_dir / "gpu-report.md", out_dir / "gpu-report.json"
    md_path.write_text("\n".join(md) + "\n")
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return md_path, json_path


def run_bench(python: str, env: dict, work: Path, timeout: int) -> dict:
    """``python -m course_utils bench --full --json``; missing, failing or slow: recorded, never fatal."""
    path = work / "bench.json"
    path.unlink(missing_ok=True)
    log = work / "logs" / "bench.log"
    start = time.perf_counter()
    rc = run_logged([python, "-m", "course_utils", "bench", "--full", "--json", str(path)], env, log, timeout)
    seconds = round(time.perf_counter() - start, 1)
    text = log.read_text(errors="replace")
    output = "\n".join(text.strip().splitlines()[-40:])
    if rc is None:
        return dict(status=f"timed out after {timeout} s", seconds=seconds, output=output, log=str(log))
    if rc:
        missing = "invalid choice: 'bench'" in text
        return dict(
            status="missing (no `bench` command in course_utils)" if missing else f"failed (exit {rc})",
            seconds=seconds,
            output=output,
            log=str(log),
        )
    result = dict(status="done", seconds=seconds, output=output, log=str(log))
    if path.exists():
        result["json"] = json.loads(path.read_text())
    else:
        result["note"] = f"It wrote no {path.name}."
    return result


def print_table(rows: list[dict], limit: float) -> None:
    print(f"\n{'notebook':<28} {'profile':<7} {'seconds':>7} {'peak GiB':>8} {'estimate':>8}  result")
    for r in rows:
        flag = ("pass" if r["passed"] else r["status"].upper()) + (" OVER LIMIT" if over_limit(r, limit) else "")
        print(
            f"{r['notebook']:<28} {r['profile']:<7} {r['seconds']:>7.1f} {fmt_gib(r.get('peak_gib')):>8} "
            f"{fmt_gib(r.get('estimate_gib')):>8}  {flag}"
        )


def check_main(args) -> int:
    """The run (``make gpu-check``)."""
    if not args.allow_cpu and not nvidia_present():
        return no_gpu(" (no NVIDIA driver: no /dev/nvidiactl, no nvidia-smi)")
    start = time.perf_counter()
    work = Path(args.work).resolve()
    for sub in ("logs", "peaks"):
        shutil.rmtree(work / sub, ignore_errors=True)
        (work / sub).mkdir(parents=True)
    python, pythonpath, info = choose_python(args)
    env = base_env(pythonpath)
    machine = dict(info, **nvidia_smi(), cpus=os.cpu_count(), date=datetime.date.today().isoformat())
    print(
        f"gpu-check: {machine.get('gpu', 'no GPU (--allow-cpu)')} | python {python} | torch {info['torch']} "
        f"(CUDA {info['cuda']}) | diffusers {info['diffusers']} | transformers {info['transformers']}",
        flush=True,
    )
    notebooks = find_notebooks(args.notebooks, Path(args.notebooks_dir))
    profiles = PROFILES if args.profile == "both" else (args.profile,)
    models = Path(args.models_dir).resolve() if args.models_dir else work / f"models-{args.size}"
    builds = None
    if "sd15" in profiles and not args.models_dir:
        builds = Builds(python, env, models, args.size, work / "logs", args.build_jobs)
    rows, report = (
        [],
        dict(
            date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            machine=machine,
            limit_gib=args.limit_gib,
            settings=args.sd15_settings,
            notebooks=[p.name for p in notebooks],
            command=" ".join(sys.argv),
        ),
    )
    try:
        for profile in profiles:
            source = None
            if profile == "sd15":
                if builds:
                    print("waiting for the lookalike build ...", flush=True)
                    ok, seconds, error = builds.wait()
                    report["build"] = dict(ok=ok, seconds=round(seconds, 1), error=error)
                    print(f"  built in {seconds:.0f} s since the start{'' if ok else ': FAILED ' + error}", flush=True)
                    if not ok:
                        rows += [
                            dict(
                                notebook=p.stem,
                                profile="sd15",
                                seconds=0.0,
                                passed=False,
                                status="not run",
                                summary="the lookalike build failed",
                                peak_gib=None,
                                reserved_gib=None,
                            )
                            for p in notebooks
                        ]
                        continue
                source = models
                report["sd15_source"] = (
                    f"SD 1.5's repositories as {args.size}-size lookalikes (random weights, "
                    f"{'real' if args.size == 'full' else 'tiny'} sizes), "
                    f"the files `download sd15` fetches, read from COURSE_MODELS_DIR={models}, offline"
                )
            penv = profile_env(env, profile, work, source, args.sd15_settings if profile == "sd15" else "")
            for i, path in enumerate(notebooks, 1):
                print(f"[{profile} {i}/{len(notebooks)}] {path.name} ...", flush=True)
                row = run_notebook(python, path, profile, penv, work, args.timeout)
                rows.append(row)
                print(
                    f"  {row['status']} in {row['seconds']:.1f} s, peak {fmt_gib(row['peak_gib'])} GiB"
                    f"{'' if row['passed'] else ' - log: ' + row['log']}",
                    flush=True,
                )
    finally:
        if builds:
            builds.kill()
    if args.bench:
        print("bench: python -m course_utils bench --full ...", flush=True)
        benv = dict(env, HF_HUB_OFFLINE="1", HF_HOME=str(work / "hf"))
        if "sd15_source" in report:  # the course's choice on this GPU is then sd15, from the same folder
            benv["COURSE_MODELS_DIR"] = str(models)
        report["bench"] = run_bench(python, benv, work, args.bench_timeout)
        print(f"  {report['bench']['status']}", flush=True)
    else:
        report["bench"] = dict(status="skipped (--no-bench)")
    report.update(
        rows=rows, total_seconds=round(time.perf_counter() - start, 1), problems=problems(rows, args.limit_gib)
    )
    md, js = write_report(report, Path(args.report_dir))
    print_table(rows, args.limit_gib)
    print(f"\nreport: {md} and {js.name}; whole run {report['total_seconds']:.0f} s", flush=True)
    for p in report["problems"]:
        print(f"FAILED: {p}", file=sys.stderr)
    return 1 if report["problems"] else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["wheels"]:
        p = argparse.ArgumentParser(
            prog="gpu_check.py wheels", description="download the wheels a bare GPU machine lacks"
        )
        p.add_argument("--dest", default=str(WHEELS))
        p.add_argument(
            "--with-pins", action="store_true", help="also transformers and huggingface_hub at the course's pins"
        )
        a = p.parse_args(argv[1:])
        return download_wheels(Path(a.dest), a.with_pins)
    if argv[:1] == ["build-models"]:
        p = argparse.ArgumentParser(prog="gpu_check.py build-models")
        p.add_argument("repos", nargs="+")
        p.add_argument("--out", required=True)
        p.add_argument("--size", default="full", choices=("small", "full"))
        p.add_argument("--threads", type=int, default=2)
        return build_main(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(
        prog="gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--profile", choices=("both",) + PROFILES, default="both")
    p.add_argument("--notebooks", nargs="+", metavar="NN", help="only these (01, 03_denoising_loop, ...); default all")
    p.add_argument("--notebooks-dir", default=str(NOTEBOOKS), help="where the NN_*.ipynb are (default %(default)s)")
    p.add_argument(
        "--report-dir", default=str(ROOT / "docs"), help="where gpu-report.md/.json go (default %(default)s)"
    )
    p.add_argument(
        "--work", default=str(ROOT / ".cache" / "gpu-check"), help="logs, peaks, models (default %(default)s)"
    )
    p.add_argument("--models-dir", help="an existing COURSE_MODELS_DIR for sd15 (skips the lookalike build)")
    p.add_argument("--size", choices=("small", "full"), default="full", help="lookalike size for sd15 (default full)")
    p.add_argument(
        "--build-jobs", type=int, default=len(BUILD_GROUPS), help="background build processes (default %(default)s)"
    )
    p.add_argument("--sd15-settings", default="", help="COURSE_SETTINGS for sd15, e.g. num_inference_steps=25")
    p.add_argument("--timeout", type=int, default=300, help="seconds per notebook (and per cell), default %(default)s")
    p.add_argument(
        "--limit-gib", type=float, default=LIMIT_GIB, help="peak GPU memory allowed per notebook (%(default)s)"
    )
    p.add_argument("--bench", action=argparse.BooleanOptionalAction, default=True, help="run the bench (default yes)")
    p.add_argument("--bench-timeout", type=int, default=180)
    p.add_argument("--site", default="/tmp/sd-course-gpu-site", help="where .whl/*.whl are installed (pip --target)")
    p.add_argument("--no-venv", action="store_true", help="ignore .venv (use this Python + .whl)")
    p.add_argument("--allow-cpu", action="store_true", help="tests only: run on a CPU, peaks n/a")
    return check_main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
