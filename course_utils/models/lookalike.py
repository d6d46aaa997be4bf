"""Lookalike Hub repositories: every repository the `sd15` profile touches, as a local git repository with
random weights, for a Hub mirror (olah, see ``course_utils.commands.hub_mirror``) to serve when the Hub is out of reach.

Each lookalike has the real repository's id, type (model or dataset), branch ``main``, file names and folder
layout: ``model_index.json`` naming the same classes, ``*.fp16.safetensors`` variants where the real one has
them, single ``.safetensors`` checkpoints in the original (CompVis/LDM) key layout, the embedding in A1111's
format, the LoRA in the real file's key format. The weights are random and seeded (a build is reproducible,
down to the commit id), in one of two sizes:

* ``size="small"``: `tiny`'s sizes (``configs.TINY_*``, 64x64 images), so every lesson runs on a laptop CPU;
* ``size="full"``: the real sizes (``configs.SD15_*``, ``configs.X4_UPSCALER_*``), for GPU runs; gigabytes.

Every architecture comes from :mod:`.configs` and every pipeline from :mod:`.builders`; the random models are
made in :mod:`.lookalike_parts` and each repository's files written in :mod:`.lookalike_files`. Pickled files
(``*.ckpt``, ``*.bin``, ``*.pt``) are not copied. ``docs/lookalike-repos.md`` lists, per repository, which
facts are copied, where each comes from, and which are unverified.

    build_lookalikes("mirrors")            # -> {"stable-diffusion-v1-5/stable-diffusion-v1-5": Path(...), ...}

lays out ``mirrors/models/<org>/<name>`` and ``mirrors/datasets/<org>/<name>``, each a git repository with one
commit on ``main``. A repository whose commit carries the same build stamp (size, configs, this code, the
library versions) is kept; any other is rebuilt.
"""

import contextlib
import functools
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import CourseError
from . import builders, configs, hub, lookalike_files, lookalike_parts, original_layout, tiny
from .lookalike_files import (
    write_controlnet,
    write_counterfeit,
    write_easynegative,
    write_inpainting,
    write_lora,
    write_sd15,
    write_upscaler,
)

BUILD_VERSION = 2  # bump when what a build writes changes in a way the stamp does not see
GIT_USER = ("sd-course lookalike", "lookalike@sd-course.invalid")
GIT_DATE = "2024-01-01T00:00:00+00:00"  # fixed, so that the same files give the same commit id
STAMP_LINE = "lookalike-build: "


# --- the repositories -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lookalike:
    """One repository: its id and type, the real one's licence, what it is, and the function that writes its files."""

    repo_id: str
    repo_type: str  # "model" or "dataset"
    licence: str
    what: str
    # write(folder, size, single_files=None): its files into folder, at "small" or "full" size; single_files names
    # the single-file checkpoints to write (default all; tools/gpu_models.py skips those `download sd15` never fetches)
    write: Callable[..., None]

    def path(self, root) -> Path:
        """Where olah looks for it: ``root/models/<org>/<name>`` (or ``root/datasets/...``).

        Args:
            root (`str` or `os.PathLike`): the mirror's repository folder.

        Returns:
            `Path`: the repository's folder.
        """
        return Path(root) / f"{self.repo_type}s" / self.repo_id


def lookalikes() -> dict:
    """Every repository the `sd15` profile touches (:mod:`.hub`).

    Returns:
        `dict[str, Lookalike]`: repository id -> its spec.

    Raises:
        CourseError: a role of ``hub.SD15_REPOS`` has no lookalike.
    """
    specs = [
        Lookalike(hub.SD15_REPOS["text2img"], "model", "creativeml-openrail-m", "Stable Diffusion 1.5", write_sd15),
        Lookalike(
            hub.SD15_REPOS["inpaint"],
            "model",
            "creativeml-openrail-m",
            "Stable Diffusion 1.5 inpainting model",
            write_inpainting,
        ),
        Lookalike(hub.SD15_REPOS["upscale"], "model", "openrail++", "Stable Diffusion x4 upscaler", write_upscaler),
        Lookalike(hub.COUNTERFEIT_REPO, "model", "creativeml-openrail-m", "Counterfeit-V2.5", write_counterfeit),
        Lookalike(hub.EASYNEGATIVE_REPO, "dataset", "other", "EasyNegative embedding", write_easynegative),
        Lookalike(
            hub.LCM_LORA_REPO,
            "model",
            "openrail++",
            "LCM-LoRA for SD 1.5",
            functools.partial(write_lora, hub.LCM_LORA_FILE, "lora"),
        ),
        Lookalike(
            hub.STYLE_LORA_REPO,
            "model",
            "creativeml-openrail-m",
            "Light and Shadow LoRA (CIVITAI) for Counterfeit-V2.5",
            functools.partial(write_lora, hub.STYLE_LORA_FILE, "style_lora"),
        ),
        Lookalike(hub.CONTROLNET_REPO, "model", "openrail", "ControlNet 1.1 canny model for SD 1.5", write_controlnet),
    ]
    out = {s.repo_id: s for s in specs}
    missing = set(hub.SD15_REPOS.values()) - set(out)
    if missing:  # a role added to hub.SD15_REPOS needs a lookalike here
        raise CourseError(
            f"No lookalike for {sorted(missing)}: add one here and its writer to course_utils/models/lookalike_files.py."
        )
    return out


def write_readme(folder: Path, spec: Lookalike, size: str) -> None:
    """Write the repository's ``README.md`` (a lookalike with random weights, the real licence) and ``.gitattributes``.

    Args:
        folder (`Path`): the repository's working tree.
        spec (`Lookalike`): the repository.
        size (`str`): ``"small"`` or ``"full"``.
    """
    sizes = {
        "small": "small (the course's `tiny` sizes, 64x64 images: for CPUs)",
        "full": "full (the real sizes: for GPUs)",
    }
    folder.joinpath("README.md").write_text(
        f"---\nlicense: {spec.licence}\ntags:\n- sd-course\n- lookalike\n- random-weights\n---\n"
        f"# Lookalike of `{spec.repo_id}`\n\n"
        f"**This is not the real {spec.what}.** The course *Stable Diffusion, taken apart and put back together* made this "
        f"repository (`course_utils.models.lookalike`) to stand in for the Hugging Face Hub {spec.repo_type} repository "
        f"`{spec.repo_id}` where the Hub cannot be reached. It has the real repository's id, type, file names and folder "
        f"layout, but its weights are **random** - size {sizes[size]} - so it draws noise.\n\n"
        f"The real repository's licence: `{spec.licence}`. Which facts about the real repository this copy copies, where each "
        "comes from, and which are unverified: `docs/lookalike-repos.md` in the course. Pickled files of the real "
        "repository (`.ckpt`, `.bin`, `.pt`) are not copied.\n"
    )
    # The Hub's .gitattributes sends weights to git-lfs; a lookalike stores them as plain git blobs (no git-lfs needed).
    folder.joinpath(".gitattributes").write_text(
        "# The Hub's copy of this file routes *.safetensors, *.ckpt, *.bin, ... through git-lfs (filter=lfs).\n"
        "# This lookalike stores every file as a plain git blob, so it needs no git-lfs.\n"
    )


# --- git ------------------------------------------------------------------------------------------------
def _git(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git in ``folder``, isolated from the user's and the system's git settings (no hooks, no git-lfs filters)."""
    if shutil.which("git") is None:
        raise CourseError("The lookalike repositories are git repositories, and `git` is not installed.")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_DATE=GIT_DATE,
        GIT_COMMITTER_DATE=GIT_DATE,
        GIT_TERMINAL_PROMPT="0",
    )
    cmd = [
        "git",
        "-c",
        f"user.name={GIT_USER[0]}",
        "-c",
        f"user.email={GIT_USER[1]}",
        "-c",
        "core.compression=0",
        "-c",
        "commit.gpgsign=false",
        "-C",
        str(folder),
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and proc.returncode:
        raise CourseError(f"git {' '.join(args)} failed in {folder}: {proc.stderr.strip()}")
    return proc


def _commit(folder: Path, message: str) -> None:
    _git(folder, "init", "-q", "-b", "main")
    _git(folder, "add", "-A")
    _git(folder, "commit", "-q", "-m", message)


def stamp(spec: Lookalike, size: str) -> str:
    """A hash of everything a build depends on: size, configs, this code, the tokenizer and the library versions.

    Args:
        spec (`Lookalike`): the repository.
        size (`str`): ``"small"`` or ``"full"``.

    Returns:
        `str`: 16 hex digits.
    """
    import diffusers
    import safetensors
    import transformers

    parts = dict(
        version=BUILD_VERSION,
        repo=spec.repo_id,
        type=spec.repo_type,
        size=size,
        configs={k: getattr(configs, k) for k in dir(configs) if k.isupper()},
        code=[inspect.getsource(m) for m in (original_layout, builders, lookalike_parts, lookalike_files)]
        + [Path(__file__).read_text()],
        tokenizer=tiny.digest(tiny.TOKENIZER_DIR),
        libs=[
            diffusers.__version__,
            transformers.__version__,
            safetensors.__version__,
            torch.__version__.split("+")[0],
        ],
    )
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_current(folder: Path, build: str) -> bool:
    """Whether ``folder`` is a git repository with one commit on ``main`` carrying ``build``'s stamp, unchanged since.

    Args:
        folder (`Path`): the repository.
        build (`str`): a :func:`stamp`.

    Returns:
        `bool`
    """
    if not (folder / ".git").is_dir():
        return False
    head = _git(folder, "log", "-1", "--format=%B", "main", check=False)
    count = _git(folder, "rev-list", "--count", "main", check=False)
    status = _git(folder, "status", "--porcelain", "--untracked-files=all", check=False)
    return (
        head.returncode == 0
        and f"{STAMP_LINE}{build}" in head.stdout
        and count.stdout.strip() == "1"
        and status.returncode == 0
        and not status.stdout.strip()
    )


@contextlib.contextmanager
def quiet():
    """No progress bars or notes from diffusers/transformers while building (restored afterwards)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        if bars:
            transformers_logging.enable_progress_bar()


def build_one(spec: Lookalike, root, size: str = "small") -> Path:
    """Build one lookalike under ``root`` (unless an identical build is there), whole or not at all.

    Args:
        spec (`Lookalike`): the repository.
        root (`str` or `os.PathLike`): the mirror's repository folder.
        size (`str`, defaults to ``"small"``): ``"small"`` or ``"full"``.

    Returns:
        `Path`: its folder, ``spec.path(root)``.
    """
    target, build = spec.path(root), stamp(spec, size)
    if is_current(target, build):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-building-", dir=target.parent))
    try:
        with quiet():
            spec.write(tmp, size)
        write_readme(tmp, spec, size)
        _commit(
            tmp,
            f"Lookalike of {spec.repo_id} ({size} size, random weights), made by sd-course\n\n{STAMP_LINE}{build}\n",
        )
        if target.exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)  # whole or not at all: a half-built repository is never served
        except OSError:  # another process put its build there first
            if not is_current(target, build):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_lookalikes(root, size: str = "small", repos=None) -> dict:
    """Build the lookalike repositories under ``root`` (``root/models/<org>/<name>``, ``root/datasets/...``).

    Args:
        root (`str` or `os.PathLike`): the mirror's repository folder (olah's ``mirrors-path``).
        size (`str`, defaults to ``"small"``): ``"small"`` (CPU-sized: all six repositories in ~10 s on 2 CPU
            cores, ~280 MB of files plus as much in ``.git``) or ``"full"`` (the real sizes: ~60 GB of files
            plus as much in ``.git``; build the ones you need with ``repos``).
        repos (iterable of `str`, *optional*): repository ids; default all of :func:`lookalikes`.

    Returns:
        `dict[str, Path]`: repository id -> its git repository (working tree and ``.git``).

    Raises:
        CourseError: an unknown size or repository id, or git missing or failing.
    """
    lookalike_parts.architecture(size)  # check the size first
    specs = lookalikes()
    wanted = list(specs) if repos is None else list(repos)
    unknown = [r for r in wanted if r not in specs]
    if unknown:
        raise CourseError(f"No lookalike of {unknown}; known: {sorted(specs)}.")
    return {repo: build_one(specs[repo], root, size) for repo in wanted}
