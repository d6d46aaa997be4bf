"""The `sd15` models folder of ``make gpu-check``: SD 1.5's lookalikes (random weights, real sizes) written as a
``COURSE_MODELS_DIR`` folder holding exactly the files ``python -m course_utils download sd15`` would fetch, built
in background processes while the `tiny` notebooks run (docs/gpu-check.md says why not through the mirror).

Which repositories, which of their files, and how they are written all come from the model layer
(``course_utils.models.hub`` and ``course_utils.models.lookalike``); this module only groups, filters and times
them. It imports the standard library at import; the course and torch only inside the functions the build
processes run (:func:`build_groups`, :func:`build_repo`, :func:`build_models`).
"""

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "gpu_check.py"  # its `build-plan` and `build-models` commands run in the build processes
STAMP = ".gpu-check-stamp"
GIB = 2**30


class BuildError(Exception):
    """The build processes could not be planned (the Python that runs them cannot read the course)."""


def build_groups(jobs: int | None = None) -> list[list[str]]:
    """Every lookalike repository, in groups: one background build process each, the largest first.

    Args:
        jobs (`int`, *optional*): at most this many groups (the two smallest are merged until it fits);
            default one per group.

    Returns:
        `list[list[str]]`: repository ids (``course_utils.models.hub``'s).
    """
    from course_utils.models import hub

    groups = [
        [hub.SD15_REPOS["text2img"]],
        [hub.COUNTERFEIT_REPO, hub.EASYNEGATIVE_REPO, hub.LCM_LORA_REPO, hub.STYLE_LORA_REPO],
        [hub.SD15_REPOS["inpaint"]],
        [hub.SD15_REPOS["upscale"], hub.CONTROLNET_REPO],
    ]
    while jobs is not None and len(groups) > max(1, jobs):  # merge the two smallest, the last two
        last = groups.pop()
        groups[-1] += last
    return groups


def wanted_files(repo_id: str) -> tuple[bool, set[str]]:
    """What ``python -m course_utils download sd15`` fetches of a repository.

    Args:
        repo_id (`str`): one of :func:`build_groups`'s.

    Returns:
        `tuple[bool, set[str]]`: ``(pipeline, single files)``: whether it fetches the repository's pipeline
        folders, and the names of the single files it fetches.
    """
    from course_utils.models import hub

    singles = {f for r, f, _, _ in hub.SINGLE_FILES if r == repo_id}
    return repo_id in set(hub.SD15_REPOS.values()), singles


def keep(files: list[str], pipeline: bool, singles: set[str]) -> set[str]:
    """The files of a repository the download command keeps.

    Args:
        files (`list[str]`): the repository's files, relative, ``/``-separated.
        pipeline (`bool`): it fetches the pipeline (:func:`wanted_files`).
        singles (`set[str]`): the single files it fetches (:func:`wanted_files`).

    Returns:
        `set[str]`: the pipeline's files as ``weights.download_plan`` picks them from the file list (the fp16 variant
        where there is one), plus the named single files.
    """
    from course_utils.models import weights

    kept = set(weights.download_plan(files, "fp16")[0]) if pipeline else set()
    return kept | (set(files) & singles)


def hash_of(path: Path) -> str:
    """A short fingerprint of a file (the models folder's stamp holds this module's).

    Args:
        path (`Path`): the file.

    Returns:
        `str`: the first 12 hex digits of its sha256.
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def build_repo(repo_id: str, models: Path, size: str) -> Path:
    """Write ``models/<repo_id>`` with the lookalike's own writer (``course_utils.models.lookalike``), only the single
    files the download command fetches, then delete every other file it would not keep. A folder whose stamp (the
    lookalike's build stamp and this module) is current is kept as it is.

    Args:
        repo_id (`str`): one of :func:`build_groups`'s.
        models (`Path`): the ``COURSE_MODELS_DIR`` folder.
        size (`str`): ``"full"`` (the real sizes) or ``"small"`` (`tiny`'s, for the tests).

    Returns:
        `Path`: ``models/<repo_id>``.
    """
    from course_utils.models import lookalike

    spec = lookalike.lookalikes()[repo_id]
    target = models / repo_id
    stamp = f"{lookalike.stamp(spec, size)} {hash_of(Path(__file__))}"
    if (target / STAMP).is_file() and (target / STAMP).read_text() == stamp:
        return target
    pipeline, singles = wanted_files(repo_id)
    tmp = target.with_name(target.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with lookalike.quiet():
        spec.write(tmp, size, single_files=singles)
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    for name in set(files) - keep(files, pipeline, singles):
        (tmp / name).unlink()
    for folder in sorted((p for p in tmp.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    (tmp / STAMP).write_text(stamp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def build_models(repos: list[str], models: Path, size: str = "full", threads: int = 2) -> None:
    """Build repositories one after the other (one background process of the run); prints each one's size and time.

    Args:
        repos (`list[str]`): repository ids.
        models (`Path`): the ``COURSE_MODELS_DIR`` folder.
        size (`str`, defaults to ``"full"``): see :func:`build_repo`.
        threads (`int`, defaults to 2): torch's CPU threads.
    """
    import torch

    torch.set_num_threads(threads)
    for repo in repos:
        start = time.perf_counter()
        folder = build_repo(repo, Path(models), size)
        gib = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / GIB
        print(f"built {repo}: {gib:.2f} GiB in {time.perf_counter() - start:.0f} s", flush=True)


def build_plan(python: str, env: dict, jobs: int | None = None) -> list[list[str]]:
    """:func:`build_groups` as ``python`` (with ``env``) reads it: the Python that starts the check may not import
    the course.

    Args:
        python (`str`): the interpreter that runs the builds.
        env (`dict`): its environment.
        jobs (`int`, *optional*): see :func:`build_groups`.

    Returns:
        `list[list[str]]`: repository ids, in groups.

    Raises:
        BuildError: it failed (its last error line).
    """
    cmd = [python, str(TOOL), "build-plan"] + ([] if jobs is None else ["--jobs", str(jobs)])
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise BuildError(f"gpu-check build-plan: {(proc.stderr.strip().splitlines() or ['(no output)'])[-1]}")
    return json.loads(proc.stdout)


class Builds:
    """The background processes that build the models folder: started at once, waited for before `sd15`.

    Args:
        python (`str`): the interpreter that runs them.
        env (`dict`): their environment.
        models (`Path`): the ``COURSE_MODELS_DIR`` folder.
        size (`str`): ``"full"`` or ``"small"``.
        logs (`Path`): where ``build-<i>.log`` go.
        jobs (`int`, *optional*): at most this many processes (default one per group of :func:`build_groups`).

    Raises:
        BuildError: see :func:`build_plan`.
    """

    def __init__(self, python: str, env: dict, models: Path, size: str, logs: Path, jobs: int | None = None):
        self.start, self.procs, self.models = time.perf_counter(), [], models
        models.mkdir(parents=True, exist_ok=True)
        groups = build_plan(python, env, jobs)
        threads = max(
            1, (os.cpu_count() or 2) // (2 * len(groups))
        )  # half the cores: the `tiny` notebooks run meanwhile
        free = shutil.disk_usage(models).free / GIB
        if size == "full" and free < 40:  # ~15 GiB kept, ~35 GiB while the writers also write the fp32 files
            print(
                f"WARNING: {free:.0f} GiB free under {models}; the full-size build needs up to ~35 GiB at once "
                "(--build-jobs 2 needs less, --work elsewhere).",
                flush=True,
            )
        for i, group in enumerate(groups):
            log = open(logs / f"build-{i}.log", "w")
            cmd = [python, str(TOOL), "build-models", "--out", str(models), "--size", size, "--threads", str(threads)]
            proc = subprocess.Popen(cmd + group, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            self.procs.append((proc, log, group))
        print(
            f"building the {size}-size lookalikes into {models} in {len(groups)} background processes "
            f"({threads} threads each; logs: {logs}/build-*.log)",
            flush=True,
        )

    def wait(self) -> tuple[bool, float, str]:
        """Wait for every build process.

        Returns:
            `tuple[bool, float, str]`: ``(ok, seconds since the start, error)``, the error naming each failed
            group with its exit code and the last lines of its log.
        """
        errors = []
        for proc, log, group in self.procs:
            proc.wait()
            log.close()
            if proc.returncode:
                tail = Path(log.name).read_text(errors="replace").strip().splitlines()[-5:]
                errors.append(f"{', '.join(group)}: exit {proc.returncode}: " + " | ".join(tail))
        return not errors, time.perf_counter() - self.start, "; ".join(errors)

    def kill(self) -> None:
        """Stop the build processes still running (the run ended early, or they are done)."""
        for proc, log, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
