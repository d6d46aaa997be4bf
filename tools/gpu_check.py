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

Peak GPU memory is measured inside each notebook's kernel by an IPython startup hook (see tools/gpu_runs.py).
``--allow-cpu`` (tests only) runs the same way on a CPU and records the peak as n/a.

This file is the command; the work is done beside it, each file standard library only at import:
tools/gpu_machine.py (GPU, Python, environment), tools/gpu_wheels.py (the wheels), tools/gpu_models.py (the
`sd15` models folder), tools/gpu_runs.py (notebooks and bench), tools/gpu_report.py (the 14 GiB rule, the report).
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TOOLS = str(Path(__file__).resolve().parent)
if TOOLS not in sys.path:  # loaded by its path (tests/test_gpu_check.py): its modules are beside it, as when run
    sys.path.insert(0, TOOLS)

from gpu_machine import MissingPackages, NoGpu, base_env, choose_python, nvidia_present, nvidia_smi  # noqa: E402
from gpu_models import BuildError, Builds, build_groups, build_models  # noqa: E402
from gpu_report import LIMIT_GIB, fmt_gib, print_table, problems, write_report  # noqa: E402
from gpu_runs import NOTEBOOKS, NoSuchNotebook, find_notebooks, profile_env, run_bench, run_notebook  # noqa: E402
from gpu_wheels import CARRY_LIMIT_MIB, MIB, WHEELS, download_wheels, tree_mib  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("tiny", "sd15")

NO_GPU_MESSAGE = """\
make gpu-check needs an NVIDIA GPU with CUDA (it measures each lesson's peak GPU memory), and this machine has none {why}.
Instead, here:
  make test        # unit tests + every notebook through nbval on `tiny` + the equivalence tests (CPU)
  make test-fast   # the same without the slow tests, under a minute
Run `make gpu-check` on a CUDA machine (after `make install`, or on a bare one with the wheels of `make gpu-wheels`:
see docs/gpu-check.md)."""


def not_run(notebooks: list[Path], why: str) -> list[dict]:
    """The `sd15` rows of notebooks that could not run.

    Args:
        notebooks (`list[Path]`): the notebooks.
        why (`str`): the rows' summary, e.g. ``"the lookalike build failed"``.

    Returns:
        `list[dict]`: one failed row each (``status`` ``"not run"``, no peak).
    """
    return [
        dict(
            notebook=p.stem,
            profile="sd15",
            seconds=0.0,
            passed=False,
            status="not run",
            summary=why,
            peak_gib=None,
            reserved_gib=None,
        )
        for p in notebooks
    ]


def run_check(args: argparse.Namespace) -> dict:
    """The run of ``make gpu-check``: steps 1 to 6 of this file's docstring, with its progress printed.

    Args:
        args (`argparse.Namespace`): the options of :func:`check_parser`.

    Returns:
        `dict`: the report (see ``gpu_report.write_report``), ``problems`` included (empty: it passed).

    Raises:
        NoGpu: no NVIDIA GPU (without ``--allow-cpu``).
        MissingPackages: no Python here can run the lessons.
        NoSuchNotebook: ``--notebooks`` names one that is not there.
        BuildError: the models folder's build processes could not start.
    """
    if not args.allow_cpu and not nvidia_present():
        raise NoGpu("(no NVIDIA driver: no /dev/nvidiactl, no nvidia-smi)")
    start = time.perf_counter()
    work = Path(args.work).resolve()
    for sub in ("logs", "peaks"):
        shutil.rmtree(work / sub, ignore_errors=True)
        (work / sub).mkdir(parents=True)
    python, pythonpath, info = choose_python(Path(args.site), use_venv=not args.no_venv, allow_cpu=args.allow_cpu)
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
    report = dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        machine=machine,
        limit_gib=args.limit_gib,
        settings=args.sd15_settings,
        notebooks=[p.name for p in notebooks],
        command=" ".join(sys.argv),
    )
    rows = []
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
                        rows += not_run(notebooks, "the lookalike build failed")
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
    return report


def check_parser() -> argparse.ArgumentParser:
    """The options of the run.

    Returns:
        `argparse.ArgumentParser`: what ``python tools/gpu_check.py --help`` shows (this file's docstring first).
    """
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
    p.add_argument("--build-jobs", type=int, help="background build processes (default one per group of repositories)")
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
    return p


def check_main(argv: list[str]) -> int:
    """``python tools/gpu_check.py [options]``: the run, the report, and the verdict.

    Args:
        argv (`list[str]`): the options (:func:`check_parser`).

    Returns:
        `int`: 0 passed; 1 a notebook failed or peaked above the limit (or bad ``--notebooks``, or no build);
        2 no GPU (the message says to run ``make test``); 3 no Python that can run the lessons.
    """
    args = check_parser().parse_args(argv)
    try:
        report = run_check(args)
    except NoGpu as err:
        print(NO_GPU_MESSAGE.format(why=err), file=sys.stderr, flush=True)
        return 2
    except MissingPackages as err:
        print(err, file=sys.stderr)
        return 3
    except (NoSuchNotebook, BuildError) as err:
        print(err, file=sys.stderr)
        return 1
    md, js = write_report(report, Path(args.report_dir))
    print_table(report["rows"], args.limit_gib)
    print(f"\nreport: {md} and {js.name}; whole run {report['total_seconds']:.0f} s", flush=True)
    for p in report["problems"]:
        print(f"FAILED: {p}", file=sys.stderr)
    return 1 if report["problems"] else 0


def wheels_main(argv: list[str]) -> int:
    """``python tools/gpu_check.py wheels [--dest DIR] [--with-pins]``: download the wheels and say what a device
    call would carry.

    Args:
        argv (`list[str]`): the options after ``wheels``.

    Returns:
        `int`: 0; pip's exit code when it failed; 1 when the tree and the wheels are over what a call carries.
    """
    p = argparse.ArgumentParser(prog="gpu_check.py wheels", description="download the wheels a bare GPU machine lacks")
    p.add_argument("--dest", default=str(WHEELS))
    p.add_argument(
        "--with-pins", action="store_true", help="also transformers and huggingface_hub at the course's pins"
    )
    args = p.parse_args(argv)
    try:
        wheels = download_wheels(Path(args.dest), args.with_pins)
    except subprocess.CalledProcessError as err:  # pip failed and said why
        return err.returncode
    total, tree = sum(w.stat().st_size for w in wheels) / MIB, tree_mib()
    print(
        f"{len(wheels)} wheels, {total:.1f} MiB in all. With the working tree ({tree:.1f} MiB) a device call carries "
        f"{tree + total:.1f} of its {CARRY_LIMIT_MIB} MiB (name .whl in its carry)."
    )
    if tree + total > CARRY_LIMIT_MIB:
        print(f"WARNING: over the {CARRY_LIMIT_MIB} MiB a device call carries; drop --with-pins.", file=sys.stderr)
        return 1
    return 0


def build_models_main(argv: list[str]) -> int:
    """``python tools/gpu_check.py build-models REPO ... --out DIR``: one background build process of the run.

    Args:
        argv (`list[str]`): the arguments after ``build-models``.

    Returns:
        `int`: 0 (a failure raises: the run reads the log's last lines).
    """
    p = argparse.ArgumentParser(prog="gpu_check.py build-models")
    p.add_argument("repos", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--size", default="full", choices=("small", "full"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    build_models(args.repos, Path(args.out), args.size, args.threads)
    return 0


def build_plan_main(argv: list[str]) -> int:
    """``python tools/gpu_check.py build-plan [--jobs N]``: print the build processes' groups of repositories as
    JSON (``gpu_models.build_plan`` reads them).

    Args:
        argv (`list[str]`): the options after ``build-plan``.

    Returns:
        `int`: 0.
    """
    p = argparse.ArgumentParser(prog="gpu_check.py build-plan")
    p.add_argument("--jobs", type=int)
    print(json.dumps(build_groups(p.parse_args(argv).jobs)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: the run, or ``wheels``, or the run's own ``build-models``/``build-plan``.

    Args:
        argv (`list[str]`, *optional*): the arguments; default ``sys.argv[1:]``.

    Returns:
        `int`: the exit code: 0 passed, 1 failed (a notebook, a peak over the limit, ...), 2 no GPU, 3 no Python
        that can run the lessons.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["wheels"]:
        return wheels_main(argv[1:])
    if argv[:1] == ["build-models"]:
        return build_models_main(argv[1:])
    if argv[:1] == ["build-plan"]:
        return build_plan_main(argv[1:])
    return check_main(argv)


if __name__ == "__main__":
    sys.exit(main())
