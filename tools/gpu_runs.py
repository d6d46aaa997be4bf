"""Running what ``make gpu-check`` measures: each lesson notebook under nbval in its own pytest and kernel, with
its wall time and peak GPU memory, and the bench; each in its own process group, killed whole at its timeout.

Peak GPU memory is measured inside each notebook's kernel: an IPython startup file (:data:`STARTUP`, in a
temporary ``IPYTHONDIR``) registers a ``post_run_cell`` hook that writes ``torch.cuda.max_memory_allocated()``
(and ``max_memory_reserved()``) to the file ``GPU_CHECK_PEAK_FILE`` names after every cell. nbval stops its
kernels with ``shutdown_kernel(now=True)`` (a kill), so an ``atexit`` hook would never run; the file is always as
new as the last cell. Each notebook gets a fresh kernel process, so the peak starts at zero.

Standard library only: torch is imported by the kernels, never here.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ESTIMATES = ROOT / "docs" / "gpu-memory.json"  # `python -m course_utils gpu-memory --json`: each lesson's sd15 peak
GIB = 2**30

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


class NoSuchNotebook(LookupError):
    """A notebook asked for (``--notebooks``) is not in the folder."""


def find_notebooks(selected: list[str] | None = None, folder: Path = NOTEBOOKS) -> list[Path]:
    """The lesson notebooks to run.

    Args:
        selected (`list[str]`, *optional*): only those whose name starts with one of these (``01``,
            ``03_denoising_loop``, a path); default every lesson (``NN_*.ipynb``, lesson 09 and later included).
        folder (`Path`, defaults to ``notebooks/``): another folder of them (``--notebooks-dir``, e.g. the tests'
            small synthetic notebook).

    Returns:
        `list[Path]`: the notebooks, in lesson order.

    Raises:
        NoSuchNotebook: one of ``selected`` matches none.
    """
    folder = Path(folder)
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not selected:
        return paths
    prefixes = {s: Path(s).name.removesuffix(".ipynb") for s in selected}
    missing = [s for s, prefix in prefixes.items() if not any(p.name.startswith(prefix) for p in paths)]
    if missing:
        raise NoSuchNotebook(f"gpu-check: no notebook matches {missing} in {folder}")
    return [p for p in paths if any(p.name.startswith(prefix) for prefix in prefixes.values())]


def write_startup(ipython_dir: Path) -> Path:
    """Put :data:`STARTUP` into an IPython folder's default profile.

    Args:
        ipython_dir (`Path`): the folder (created if needed).

    Returns:
        `Path`: ``ipython_dir``, for ``IPYTHONDIR``.
    """
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-gpu-check.py").write_text(STARTUP)
    return ipython_dir


def profile_env(env: dict, profile: str, work: Path, models: Path | None = None, settings: str = "") -> dict:
    """The environment of one profile's notebooks: offline, strict about warnings, with the peak hook.

    Args:
        env (`dict`): the base (``gpu_machine.base_env``).
        profile (`str`): ``"tiny"`` or ``"sd15"`` (``COURSE_PROFILE``).
        work (`Path`): the run's folder (an empty ``HF_HOME`` and the ``IPYTHONDIR`` go there).
        models (`Path`, *optional*): the ``COURSE_MODELS_DIR`` folder.
        settings (`str`, defaults to ``""``): ``COURSE_SETTINGS``, e.g. ``"num_inference_steps=25"``.

    Returns:
        `dict`: the environment.
    """
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
    """Run a command in its own process group with its output in a log file.

    Args:
        cmd (`list[str]`): the command.
        env (`dict`): its environment.
        log (`Path`): its stdout and stderr.
        timeout (`float`): seconds; past them the whole group (pytest and its kernel, the bench and its workers) is
            killed, as on Ctrl-C.

    Returns:
        `int | None`: its exit code, or `None` when it ran past ``timeout``.
    """
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


def estimated_gib(notebook: str, profile: str) -> float | None:
    """The estimate of ``docs/gpu-memory.json`` for a notebook (``python -m course_utils gpu-memory``: its heaviest
    cell on `sd15` at 512x512 in float16, counted without a GPU).

    Args:
        notebook (`str`): e.g. ``"06_upscaling"``.
        profile (`str`): ``"tiny"`` or ``"sd15"``.

    Returns:
        `float | None`: GiB; `None` on `tiny`, for a lesson the table lacks, or without the table.
    """
    if profile != "sd15" or not ESTIMATES.exists():
        return None
    rows = {r["lesson"]: r["peak_gib"] for r in json.loads(ESTIMATES.read_text())["lessons"]}
    return rows.get(notebook[:2])


def run_notebook(python: str, path: Path, profile: str, env: dict, work: Path, timeout: int) -> dict:
    """One notebook under nbval (``pytest --nbval-lax``) in its own pytest and kernel.

    Args:
        python (`str`): the interpreter.
        path (`Path`): the notebook.
        profile (`str`): ``"tiny"`` or ``"sd15"``.
        env (`dict`): :func:`profile_env`'s.
        work (`Path`): the run's folder (``logs/`` and ``peaks/`` go there).
        timeout (`int`): seconds per cell; the whole pytest run gets a minute more.

    Returns:
        `dict`: the row: ``notebook``, ``profile``, ``seconds``, ``passed``, ``status`` (``passed``, ``failed``,
        ``timeout``), ``summary`` (pytest's last line), ``cells``, ``peak_cell``, ``peak_gib`` and ``reserved_gib``
        (`None` without CUDA), ``estimate_gib`` (:func:`estimated_gib`), ``log``; and ``error`` (the log's last
        lines) when it did not pass.
    """
    peak_file = work / "peaks" / f"{profile}-{path.stem}.json"
    peak_file.parent.mkdir(parents=True, exist_ok=True)
    peak_file.unlink(missing_ok=True)
    log = work / "logs" / f"{profile}-{path.stem}.log"
    cmd = [python, "-m", "pytest", "-q", "-p", "nbval.plugin", "-p", "no:cacheprovider"]
    cmd += ["--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout", str(timeout), str(path)]
    start = time.perf_counter()
    rc = run_logged(cmd, dict(env, GPU_CHECK_PEAK_FILE=str(peak_file)), log, timeout + 60)
    seconds = time.perf_counter() - start
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
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


def run_bench(python: str, env: dict, work: Path, timeout: int) -> dict:
    """``python -m course_utils bench --full --json``: a missing, failing or slow bench is recorded, never raised.

    Args:
        python (`str`): the interpreter.
        env (`dict`): its environment.
        work (`Path`): the run's folder (``bench.json`` and ``logs/bench.log`` go there).
        timeout (`int`): seconds.

    Returns:
        `dict`: ``status`` (``done``, ``timed out after ...``, ``missing ...``, ``failed (exit N)``), ``seconds``,
        ``output`` (the log's last 40 lines), ``log``; and ``json`` (the bench's own), or a ``note`` without it.
    """
    path = work / "bench.json"
    path.unlink(missing_ok=True)
    log = work / "logs" / "bench.log"
    start = time.perf_counter()
    rc = run_logged([python, "-m", "course_utils", "bench", "--full", "--json", str(path)], env, log, timeout)
    seconds = round(time.perf_counter() - start, 1)
    text = log.read_text(errors="replace")
    result = dict(seconds=seconds, output="\n".join(text.strip().splitlines()[-40:]), log=str(log))
    if rc is None:
        return dict(result, status=f"timed out after {timeout} s")
    if rc:
        missing = "invalid choice: 'bench'" in text
        return dict(result, status="missing (no `bench` command in course_utils)" if missing else f"failed (exit {rc})")
    result["status"] = "done"
    if path.exists():
        result["json"] = json.loads(path.read_text())
    else:
        result["note"] = f"It wrote no {path.name}."
    return result
