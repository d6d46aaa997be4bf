"""Command line: run the whole course headless, download models for offline use, show the choice, check a seat.

python -m course_utils course [--out build] [NOTEBOOK | NN ...]
python -m course_utils download sd15 --to models
python -m course_utils hub --serve [--size small|full] [--port N]
python -m course_utils hub --serve --room [--upstream URL] [--host 0.0.0.0] [--port 8090] [--offline]
python -m course_utils info
python -m course_utils doctor [--json PATH]
python -m course_utils evaluate [--seeds 20] [--json scores.json]
python -m course_utils bench [--full] [--profile P] [--json PATH]
python -m course_utils gpu-memory [--json PATH]
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from ..errors import CourseError
from ..models.hub import SD15_REPOS
from ..paths import NOTEBOOKS_DIR, ROOT

CHOICE_RE = re.compile(r"course_utils: (?:role=\S+ )?profile=(\S+) device=(\S+)")


def run_notebook(path: Path, out_dir: Path, timeout: int = 1800) -> dict:
    """Execute one notebook headless and save it (``.ipynb`` and ``.html``) under ``out_dir``.

    The ``.ipynb`` keeps the widgets' final state (lesson 3's slider, diffusers' progress bars) in its metadata
    and is marked trusted on this machine (as ``jupyter trust`` does), so JupyterLab shows its widgets and HTML
    outputs without re-running it. The ``.html`` leaves out the outputs tagged ``LIVE_ONLY_TAG`` (widgets that
    need a kernel) and keeps their still copies.

    Args:
        path (`Path`): the ``.ipynb`` to run.
        out_dir (`Path`): where the executed copies go.
        timeout (`int`): seconds allowed per cell.

    Returns:
        `dict`: ``notebook``, ``seconds``, ``images`` (image outputs), ``profile``, ``device``, ``error``.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from traitlets.config import Config

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    error = ""
    with tempfile.TemporaryDirectory(prefix="course-kernel-") as sockets:
        # IPC (local socket files, in a folder of their own: an absolute path, as the kernel runs in the notebook's
        # folder) where the system has it: over TCP the kernel warns, once per notebook, that its traffic is
        # unencrypted - true of any kernel on TCP and nothing a learner can act on. Windows has only TCP.
        config = Config()
        if os.name != "nt":
            config.KernelManager.transport = "ipc"
            config.KernelManager.ip = str(Path(sockets) / "kernel")
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            store_widget_state=True,
            config=config,
            resources={"metadata": {"path": str(path.parent)}},
        )
        try:
            client.execute()
        except CellExecutionError as err:
            error = str(err).strip().splitlines()[-1][:200]
            client.set_widgets_metadata()  # what ran keeps its widgets (execute() stores them only after the last cell)
    seconds = time.perf_counter() - start
    images, profile, device = 0, "?", "?"
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            images += any(k.startswith("image/") for k in data)  # one picture may come as PNG and JPEG
            text = output.get("text", "") or data.get("text/plain", "")
            match = CHOICE_RE.search(text)
            if match and profile == "?":
                profile, device = match.groups()
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    _trust(nb)
    (out_dir / path.with_suffix(".html").name).write_text(export_html(nb), encoding="utf-8")
    return dict(notebook=path.name, seconds=seconds, images=images, profile=profile, device=device, error=error)


def export_html(nb) -> str:
    """An executed notebook as one HTML page (nbconvert's lab template) without the outputs tagged ``LIVE_ONLY_TAG``.

    Args:
        nb (`nbformat.NotebookNode`): the executed notebook.

    Returns:
        `str`: the page. Pictures are inline; scripts that only load from the web (widgets, MathJax) do nothing offline.
    """
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    from ..visual import LIVE_ONLY_TAG  # here, not at the top: the CLI starts without torch

    config = Config(TagRemovePreprocessor=dict(enabled=True, remove_single_output_tags={LIVE_ONLY_TAG}))
    return HTMLExporter(config=config).from_notebook_node(nb)[0]


def _trust(nb) -> None:
    """Sign an executed notebook in this user's Jupyter trust database (what ``jupyter trust`` does)."""
    import sqlite3

    from nbformat.sign import NotebookNotary

    try:
        NotebookNotary().sign(nb)
    except (OSError, sqlite3.Error) as err:  # a read-only home: JupyterLab then asks before it runs the outputs
        print(f"  (not marked trusted: {err})", flush=True)


def notebook_paths(names: list[str]) -> list[Path]:
    """The notebooks ``course`` runs: paths as given, a lesson number ("03") for that lesson, nothing for all."""
    if not names:
        return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    paths = []
    for name in names:
        found = sorted(NOTEBOOKS_DIR.glob(f"{name}_*.ipynb")) if re.fullmatch(r"\d\d", name) else [Path(name)]
        if not found:
            raise SystemExit(f"no lesson {name} in {NOTEBOOKS_DIR}")
        paths += found
    return paths


def course(args) -> int:
    """Run every notebook (or those named) and print a table; exit 1 if any failed."""
    paths = notebook_paths(args.notebooks)
    rows = []
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        rows.append(run_notebook(path, Path(args.out)))
        print(
            f"  {rows[-1]['seconds']:.1f} s{'  FAILED: ' + rows[-1]['error'] if rows[-1]['error'] else ''}", flush=True
        )
    width = max(len(r["notebook"]) for r in rows) if rows else 8
    print(f"\n{'notebook':<{width}}  {'seconds':>7}  {'images':>6}  {'profile':<11}  device")
    for r in rows:
        print(
            f"{r['notebook']:<{width}}  {r['seconds']:>7.1f}  {r['images']:>6}  {r['profile']:<11}  {r['device']}{'  FAILED' if r['error'] else ''}"
        )
    print(f"{'total':<{width}}  {sum(r['seconds'] for r in rows):>7.1f}  {sum(r['images'] for r in rows):>6}")
    print(f"executed notebooks and HTML copies are in {Path(args.out).resolve()}")
    return 1 if any(r["error"] for r in rows) else 0


def download(args) -> int:
    """Download a profile's Hub models into a plain folder to copy to an offline machine."""
    from huggingface_hub import hf_hub_download

    from ..models import hub

    if args.profile != "sd15":
        print(f"Only the sd15 profile downloads anything; {args.profile!r} is built offline.")
        return 0
    jobs, roles = [], {}
    for role in args.role or SD15_REPOS:  # text2img and img2img share one repository: fetched once
        roles.setdefault(tuple(hub.repo_ids(role)), role)
    for repos, role in roles.items():
        # Configs and the weights the course loads on a GPU: from the repository's own file list, the fp16 variant
        # where it has one, else its components' safetensors (else .bin); never the big single-file checkpoints.
        jobs.append(
            (
                repos[0],
                f"{role}: {' or '.join(repos)} -> {Path(args.to)}/<repository>",
                lambda role=role: hub.find_and_fetch(role, "fp16", args.to),
            )
        )
    # Single files: lesson 07's checkpoint, EasyNegative and LoRA; lesson 11's ControlNet (config and fp16 weights).
    for repo, filename, repo_type, role in hub.SINGLE_FILES:
        if args.role and role not in args.role:
            continue
        jobs.append(
            (
                repo,
                f"{repo}/{filename}",
                lambda repo=repo, filename=filename, repo_type=repo_type: hf_hub_download(
                    repo, filename, repo_type=repo_type, local_dir=Path(args.to) / repo
                ),
            )
        )
    for repo, what, fetch in jobs:
        print(f"downloading {what}", flush=True)
        try:
            fetch()
        except CourseError as err:  # the course's own message: missing (every known copy), or the Hub unreachable
            print(err, file=sys.stderr)
            return 1
        except Exception as err:  # offline, DNS failure, proxy, missing file, ...
            print(hub.course_error(repo, err), file=sys.stderr)  # the repo is missing, or the Hub unreachable
            return 1
    print(f"done. Copy {args.to} to the offline machine and set COURSE_MODELS_DIR={Path(args.to).resolve()}")
    return 0


def hub_serve(args) -> int:
    """Serve the lookalike repositories, or with ``--room`` a caching room mirror, through olah (see course_utils/commands/hub_mirror.py)."""
    from . import hub_mirror

    if args.room:
        return hub_mirror.serve_room(
            Path(args.root) / "room",
            upstream=args.upstream,
            host=args.host,
            port=args.port or 8090,
            public_host=args.public_host,
            offline=args.offline,
        )
    return hub_mirror.serve(Path(args.root) / args.size, size=args.size, port=args.port)


def info(args) -> int:
    """Print what the course would choose on this machine."""
    from ..models.registry import choose

    print("course_utils:", choose())
    for var in (
        "COURSE_PROFILE",
        "COURSE_DEVICE",
        "COURSE_DTYPE",
        "COURSE_MODELS_DIR",
        "COURSE_CACHE",
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_OFFLINE",
    ):
        print(f"  {var}={os.environ.get(var, '')}")
    return 0


def doctor(args) -> int:
    """Check this seat and print the report (see course_utils/commands/doctor.py); exit 1 on a real problem."""
    from .doctor import main as doctor_main

    return doctor_main(json_path=args.json, timeout=args.timeout)


def gpu_memory(args) -> int:
    """Estimate every lesson's peak GPU memory on `sd15` (course_utils/gpu_memory.py); exit 1 if one exceeds a T4."""
    from ..gpu_memory import main as gpu_memory_main

    return gpu_memory_main(["--json", args.json] if args.json else [])


def main(argv=None) -> None:
    from ..notebook import quiet_log_notes
    from .setup_env import main as setup_main  # a bare Python runs it: no torch, no installed package

    quiet_log_notes()  # before any command imports transformers (its "requires torchvision" note says nothing to act on)
    parser = argparse.ArgumentParser(
        prog="python -m course_utils", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("course", help="execute every notebook headless and print a table")
    p.add_argument("notebooks", nargs="*", help="notebooks to run, as paths or lesson numbers (03); default: all")
    p.add_argument("--out", default=str(ROOT / "build"), help="where executed notebooks go (default: build/)")
    p.set_defaults(func=course)
    p = sub.add_parser("download", help="download models into a folder for offline use")
    p.add_argument("profile", choices=["sd15"])
    p.add_argument("--to", required=True, help="target folder; later set COURSE_MODELS_DIR to it")
    p.add_argument("--role", action="append", choices=list(SD15_REPOS), help="only this role's model (repeatable)")
    p.set_defaults(func=download)
    p = sub.add_parser("hub", help="serve lookalikes of the sd15 repositories through a local Hub mirror (olah)")
    p.add_argument(
        "--serve",
        action="store_true",
        required=True,
        help="build the lookalikes (first use) and serve them until Ctrl-C",
    )
    p.add_argument(
        "--size",
        choices=["small", "full"],
        default="small",
        help="small: CPU-sized random weights; full: SD 1.5's sizes",
    )
    p.add_argument("--port", type=int, help="default: a free port (8090 with --room)")
    p.add_argument("--root", default=str(ROOT / ".cache" / "hub-mirror"), help="working folder (default %(default)s)")
    p.add_argument(
        "--room", action="store_true", help="a caching mirror of the real Hub for a classroom (cache in ROOT/room)"
    )
    p.add_argument("--upstream", default="https://huggingface.co", help="with --room: the Hub or mirror to fetch from")
    p.add_argument("--host", default="0.0.0.0", help="with --room: the interface to listen on (default: all)")
    p.add_argument("--public-host", help="with --room: the address seats use (default: this machine's LAN address)")
    p.add_argument("--offline", action="store_true", help="with --room: serve only what the cache holds")
    p.set_defaults(func=hub_serve)
    p = sub.add_parser(
        "setup", help="what `make install` does, on any system (Windows too): venv, torch, the course, its kernel"
    )
    p.add_argument("--venv", default=".venv", help="the virtual environment to make or complete (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.set_defaults(func=lambda args: setup_main(args.venv, args.dry_run))
    p = sub.add_parser("info", help="show the profile and device the course would use")
    p.set_defaults(func=info)
    p = sub.add_parser("doctor", help="check this seat: device, memory, disk, profile, models, libraries, widgets")
    p.add_argument("--json", help="also write the report as JSON here")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the Hub per repository (default 5)")
    p.set_defaults(func=doctor)
    p = sub.add_parser(
        "evaluate",
        help="score the trained tiny models (table + JSON); see course_utils/commands/evaluate.py",
        add_help=False,
    )
    p.set_defaults(func=None)
    p = sub.add_parser(
        "bench",
        help="measure time and memory per image on this machine; see course_utils/commands/bench.py",
        add_help=False,
    )
    p.set_defaults(func=None)
    p = sub.add_parser(
        "gpu-memory",
        help="estimate each lesson's peak GPU memory on sd15 (no GPU needed); see course_utils/gpu_memory.py",
    )
    p.add_argument("--json", help="also write the estimates here")
    p.set_defaults(func=gpu_memory)
    args, rest = parser.parse_known_args(argv)
    if args.command == "evaluate":
        from .evaluate import main as evaluate_main

        evaluate_main(rest)
        return
    if args.command == "bench":
        from .bench import main as bench_main

        bench_main(rest)
        return
    args = parser.parse_args(argv)
    sys.exit(args.func(args))
