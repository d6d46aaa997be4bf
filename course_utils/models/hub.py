"""Where the `sd15` profile's weights come from: a local folder, the Hub cache, or the Hub (or a mirror).

Every Hugging Face Hub repository the course uses is named here and nowhere else. The lookup
order is the same for every file the course loads:

1. ``COURSE_MODELS_DIR/<repo id>/...`` - a folder made by ``python -m course_utils download sd15``;
2. the Hub cache (``HF_HOME``), without asking the network;
3. the Hub itself, or the mirror ``HF_ENDPOINT`` names (never when ``HF_HUB_OFFLINE=1``).

When all three fail the error says so and names the three ways out (:func:`unreachable_message`);
a repository the Hub (or mirror) does not have gets its own message (:func:`missing_message`).

Repositories move and disappear (RunwayML's SD 1.5 in 2024, Stability AI's SD 2.x in November 2025), so
each role has an ordered list of known copies (:func:`repo_ids`), tried in turn by :func:`find` with each
try printed; ``COURSE_HUB_<ROLE>`` (e.g. ``COURSE_HUB_UPSCALE=<org>/<name>,<org2>/<name2>``) replaces the list.

What is downloaded comes from the repository's own file list (:func:`~course_utils.models.weights.download_plan`): per component the
fp16 variant where the repository has it for every component, else the default weights; safetensors
where a component has them, else the pickled ``.bin`` files an early-2023 conversion wrote. The cache
lookup (:func:`cached`) checks the snapshot's folders the same way, so a ``.bin``-only snapshot is found.
"""

import os
from pathlib import Path

from ..errors import CourseError
from .weights import download_plan, folder_complete

# Each role's repository. RunwayML's stable-diffusion-v1-5 repository was removed from the Hub in
# 2024; stable-diffusion-v1-5/ is its official mirror.
SD15_REPOS = {
    "text2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "img2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "upscale": "stabilityai/stable-diffusion-x4-upscaler",
    "community": "gsdf/Counterfeit-V2.5",
    "controlnet": "stable-diffusion-v1-5/stable-diffusion-v1-5",  # the pipeline around CONTROLNET_REPO
}
# Known copies of a role's repository, tried in order after SD15_REPOS[role] when the Hub says it is missing.
# The x4 upscaler is an SD 2 model: Stability AI removed its SD 2.x repositories in November 2025 and the
# sd2-community organisation keeps copies of them (docs/lookalike-repos.md: that this copy exists under
# this name is unverified; COURSE_HUB_UPSCALE names another).
KNOWN_COPIES = {
    "upscale": ("sd2-community/stable-diffusion-x4-upscaler",),
}
# Repositories known to publish fp16 weights as a ``variant="fp16"`` (the others are loaded, then cast). What is
# downloaded is decided from a repository's own file list (download_plan); this set is for what runs without it:
# the download sizes in tools/publish.py, tools/gpu_check.py and the tests.
FP16_VARIANTS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "stabilityai/stable-diffusion-x4-upscaler",
}
# Lesson 07's single files.
COUNTERFEIT_REPO = "gsdf/Counterfeit-V2.5"  # diffusers folders AND single files in one repo
COUNTERFEIT_FILE = "Counterfeit-V2.5_fp16.safetensors"  # ~2.1 GB, original (LDM) layout
SD15_CONFIG_REPO = SD15_REPOS["text2img"]  # the configs from_single_file builds an SD 1.5 fine-tune from
EASYNEGATIVE_REPO = "gsdf/EasyNegative"  # a Hub *dataset* repository, not a model repository
EASYNEGATIVE_FILE = "EasyNegative.safetensors"
# LCM-LoRA for SD 1.5 (diffusers format): turns SD 1.5 and its fine-tunes into a 4-step model when
# used with LCMScheduler and guidance_scale about 1.
LCM_LORA_REPO = "latent-consistency/lcm-lora-sdv1-5"
LCM_LORA_FILE = "pytorch_lora_weights.safetensors"
# Lesson 07's style LoRA: "Light and Shadow" from CIVITAI (model 13239), a kohya LoRA for Counterfeit-V2.5, in the Hub
# copy whose model card shows diffusers loading it (diffusers' own tests load a copy: hf-internal-testing/...).
STYLE_LORA_REPO = "sayakpaul/civitai-light-shadow-lora"
STYLE_LORA_FILE = "light_and_shadow.safetensors"  # 151 MB (the Hub's listing)
# Lesson 11's ControlNet for SD 1.5: a model repository (config.json and the weights at its top level), not a pipeline.
CONTROLNET_REPO = "lllyasviel/control_v11p_sd15_canny"
CONTROLNET_FILES = {  # variant -> weights file (docs/lookalike-repos.md: sizes and sources)
    None: "diffusion_pytorch_model.safetensors",  # float32, ~1.45 GB
    "fp16": "diffusion_pytorch_model.fp16.safetensors",  # 723 MB (the Hub's listing)
}
# The files the course loads one by one, beside the pipelines: (repository, file, repository type, role). What
# `download sd15` fetches and `doctor` checks of them (the ControlNet: its fp16 weights, what a GPU loads).
SINGLE_FILES = (
    (COUNTERFEIT_REPO, COUNTERFEIT_FILE, "model", "community"),
    (EASYNEGATIVE_REPO, EASYNEGATIVE_FILE, "dataset", "community"),
    (LCM_LORA_REPO, LCM_LORA_FILE, "model", "community"),
    (STYLE_LORA_REPO, STYLE_LORA_FILE, "model", "community"),
    (CONTROLNET_REPO, "config.json", "model", "controlnet"),
    (CONTROLNET_REPO, CONTROLNET_FILES["fp16"], "model", "controlnet"),
)


def repo_ids(role: str) -> list[str]:
    """The repositories ``role`` may load from on the `sd15` profile, in the order they are tried.

    Args:
        role (`str`): ``"text2img"``, ``"img2img"``, ``"inpaint"``, ``"upscale"`` or ``"community"``.

    Returns:
        `list[str]`: ``COURSE_HUB_<ROLE>`` split at commas if set, else :data:`SD15_REPOS` then
        :data:`KNOWN_COPIES`; e.g. ``["stabilityai/stable-diffusion-x4-upscaler",
        "sd2-community/stable-diffusion-x4-upscaler"]`` for ``"upscale"``.
    """
    setting = os.environ.get(f"COURSE_HUB_{role.upper()}", "")
    listed = [r.strip() for r in setting.split(",") if r.strip()]
    return listed or [SD15_REPOS[role], *KNOWN_COPIES.get(role, ())]


def repo_id(role: str) -> str:
    """The first repository of :func:`repo_ids`: the one ``role`` loads when the Hub has it."""
    return repo_ids(role)[0]


def hub_offline() -> bool:
    """`True` when ``HF_HUB_OFFLINE`` says never to go online (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def local_folder(repo_id: str) -> Path | None:
    """``COURSE_MODELS_DIR/<repo_id>`` when it holds a diffusers pipeline (``model_index.json``), else `None`."""
    root = os.environ.get("COURSE_MODELS_DIR")
    if root and (Path(root) / repo_id / "model_index.json").exists():
        return Path(root) / repo_id
    return None


def cached(repo_id: str, variant: str | None = None) -> str | None:
    """The Hub cache's snapshot folder of ``repo_id`` holding a whole pipeline in ``variant``, else `None` (no network).

    The snapshot is the one ``main`` points to; it counts when :func:`folder_complete` (safetensors or
    ``.bin``). huggingface_hub's own offline lookup (``snapshot_download(local_files_only=True)``) is not
    used: it fails as soon as any file of the repository was not downloaded, and with the safetensors
    patterns it would return a ``.bin``-only snapshot's configs alone.
    """
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(repo_id, "model_index.json")
    if not isinstance(index, str) or not folder_complete(Path(index).parent, variant):
        return None
    return str(Path(index).parent)


class RepoMissing(CourseError):
    """The Hub (or mirror) answered, and it has no repository (or file) by that name."""


def missing_message(repo_id: str, error: object = None, role: str | None = None) -> str:
    """The message shown when the Hub answers that ``repo_id`` does not exist (or is gated): not a network problem."""
    from huggingface_hub import constants

    setting = f"COURSE_HUB_{role.upper()}" if role else "COURSE_HUB_<ROLE>"
    return (
        f"'{repo_id}' is missing on {constants.ENDPOINT}: the server answered, so the network is fine, but it has "
        f"no such repository (or file), or it needs a login.{f' [{type(error).__name__}]' if error else ''}\n"
        "Ways out:\n"
        "  1. it moved or was removed (Stability AI removed its SD 2.x repositories in November 2025): point the course\n"
        f"     at a copy with {setting}=<org>/<name> (several, comma-separated, are tried in order) before starting Python;\n"
        "  2. it is gated: accept its terms on the Hub and log in (`hf auth login`);\n"
        "  3. the offline teaching model: set COURSE_PROFILE=tiny."
    )


def course_error(repo_id: str, error: Exception, role: str | None = None) -> CourseError:
    """The course's error for a failed Hub call: :class:`RepoMissing` (the server has no such repository or
    file) or a `CourseError` saying the Hub is unreachable (with the three ways out)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    missing = (
        RepositoryNotFoundError,
        GatedRepoError,
        RevisionNotFoundError,
        EntryNotFoundError,
        RemoteEntryNotFoundError,
    )
    if isinstance(error, missing) and not isinstance(error, LocalEntryNotFoundError):  # "local": not cached, offline
        return RepoMissing(missing_message(repo_id, error, role))
    return CourseError(unreachable_message(repo_id, error))


def unreachable_message(repo_id: str, error: object = None) -> str:
    """The message shown when ``repo_id`` is neither reachable nor cached: the three ways out."""
    from huggingface_hub import constants

    return (
        f"Cannot get '{repo_id}': the Hugging Face Hub ({constants.ENDPOINT}) is not reachable"
        f"{' (HF_HUB_OFFLINE is set)' if hub_offline() else ''} and the model is not in the cache "
        f"({constants.HF_HUB_CACHE}).{f' [{type(error).__name__}: {error}]' if error else ''}\n"
        "Three ways out:\n"
        "  1. a mirror: set HF_ENDPOINT (e.g. HF_ENDPOINT=https://hf-mirror.com) before starting Python;\n"
        "  2. a local folder: on a connected machine run `python -m course_utils download sd15 --to models`,\n"
        "     copy the `models` folder here and set COURSE_MODELS_DIR=/path/to/models;\n"
        "  3. the offline teaching model: set COURSE_PROFILE=tiny."
    )


def resolve_model(
    repo_id: str, check_hub: bool = True, variant: str | None = None, role: str | None = None, download: bool = False
) -> str:
    """Find where to load ``repo_id`` from: a local folder, the Hub cache, or the Hub itself.

    Args:
        repo_id (`str`): a Hub id such as ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``.
        check_hub (`bool`, defaults to `True`): ask the Hub (10 s timeout) whether it has the repository.
        variant (`str`, *optional*): the weights wanted (``"fp16"`` or `None`); a cache holding only the
            other kind is used too (see :func:`~course_utils.models.weights.folder_variant`).
        role (`str`, *optional*): named in the message when the repository is missing.
        download (`bool`, defaults to `False`): when it is neither local nor cached, download the
            pipeline's files (:func:`download_plan` of the repository's file list) into the cache and
            return that folder, instead of returning the id for ``from_pretrained`` to download. The
            course downloads itself so that the cache holds exactly what a later offline lookup asks
            for, so that a ``.bin``-only repository works, and so that a mirror which only answers
            ``/revision/main`` metadata requests (olah offline) serves it too.

    Returns:
        `str`: a folder (``COURSE_MODELS_DIR/<repo_id>`` or the cache snapshot) or, without
        ``download``, ``repo_id`` itself when it would be downloaded (``HF_ENDPOINT`` picks the server).

    Raises:
        RepoMissing: the Hub answered that there is no such repository (or it is gated).
        CourseError: neither reachable nor cached; the message names ``HF_ENDPOINT``, a
            local folder and ``COURSE_PROFILE=tiny``.
    """
    local = local_source(repo_id, variant)
    if local:
        return local
    if hub_offline():
        raise CourseError(unreachable_message(repo_id))
    if download:
        return fetch_pipeline(repo_id, variant, role=role)
    if check_hub:
        from huggingface_hub import HfApi

        try:  # revision="main": the route both the Hub and a mirror such as olah answer
            HfApi().model_info(repo_id, revision="main", timeout=10)
        except Exception as err:  # missing repository; or DNS failure, refused connection, timeout, proxy error ...
            raise course_error(repo_id, err, role) from None
    return repo_id


def fetch_pipeline(repo_id: str, variant: str | None = None, local_dir=None, role: str | None = None) -> str:
    """Download a pipeline's files (:func:`download_plan` of the repository's own file list) and return their folder.

    Args:
        repo_id (`str`): the repository.
        variant (`str`, *optional*): the weights wanted (``"fp16"``: taken where the repository has them).
        local_dir (`str` or `os.PathLike`, *optional*): a plain folder to download into (``download sd15 --to``);
            default the Hub cache.
        role (`str`, *optional*): named in the message when the repository is missing.

    Raises:
        RepoMissing: the Hub answered that there is no such repository (or it is gated).
        CourseError: the Hub is unreachable, or the network failed half-way (nothing half-written is kept).
    """
    from huggingface_hub import HfApi, snapshot_download

    try:  # revision="main": the route both the Hub and a mirror such as olah answer
        info = HfApi().model_info(repo_id, revision="main", timeout=10)
        files, _ = download_plan([s.rfilename for s in info.siblings or []], variant)
        return snapshot_download(repo_id, allow_patterns=files, local_dir=local_dir)
    except Exception as err:  # missing repository; DNS failure, refused connection, timeout, proxy; or a drop half-way
        raise course_error(repo_id, err, role) from None


def local_source(repo_id: str, variant: str | None = None) -> str | None:
    """``COURSE_MODELS_DIR/<repo_id>``, else a complete cache snapshot in ``variant``, else in the other kind; else `None`."""
    local = local_folder(repo_id) or cached(repo_id, variant) or cached(repo_id, "fp16" if variant is None else None)
    return str(local) if local else None


_MISSING = set()  # repositories the Hub said are missing, in this process


def find(role: str, variant: str | None = None, download: bool = False, say=print) -> tuple[str, str]:
    """The first of ``role``'s repositories (:func:`repo_ids`) that is local, cached or on the Hub, and where it is.

    Local folders and the cache are searched first for every repository (no network); then the Hub is asked
    for each in turn, each try printed; a repository the Hub says is missing moves on to the next.

    Args:
        role (`str`): e.g. ``"upscale"``.
        variant (`str`, *optional*): the weights wanted (``"fp16"`` for a float16 run).
        download (`bool`, defaults to `False`): download it when needed (see :func:`resolve_model`).
        say (`Callable[[str], None]`, defaults to `print`): where the tries are reported.

    Returns:
        `tuple[str, str]`: ``(repo_id, source)``, ``source`` as :func:`resolve_model` returns it.

    Raises:
        RepoMissing: the Hub has none of them (the message lists each one tried).
        CourseError: none is local or cached and the Hub is unreachable.
    """
    repos = repo_ids(role)
    for repo in repos:
        local = local_source(repo, variant)
        if local:
            return repo, local
    if hub_offline():
        raise CourseError(unreachable_message(repos[0]))
    return try_each(role, lambda repo: resolve_model(repo, variant=variant, role=role, download=download), say)


def find_and_fetch(role: str, variant: str | None, to, say=print) -> tuple[str, str]:
    """Download ``role``'s pipeline into the plain folder ``to/<repo id>`` from the first of its repositories
    (:func:`repo_ids`) the Hub has: what ``python -m course_utils download sd15 --to <to>`` does per role.

    Returns:
        `tuple[str, str]`: ``(repo_id, folder)``.
    """
    return try_each(role, lambda repo: fetch_pipeline(repo, variant, local_dir=Path(to) / repo, role=role), say)


def try_each(role: str, attempt, say=print) -> tuple[str, str]:
    """``attempt(repo)`` for each of ``role``'s repositories in turn until one is not missing; each try printed.

    Args:
        role (`str`): the role.
        attempt (`Callable[[str], str]`): returns where the repository is; raises :class:`RepoMissing` to move on
            (any other error stops the search: an unreachable Hub will not have the next copy either).
        say (`Callable[[str], None]`, defaults to `print`): where the tries are reported.

    Returns:
        `tuple[str, str]`: ``(repo_id, attempt(repo_id))`` of the first that worked.

    Raises:
        RepoMissing: the Hub has none of them; the message names each one tried.
    """
    from huggingface_hub import constants

    repos, missing = repo_ids(role), []
    for n, repo in enumerate(repos):
        if repo in _MISSING and repo != repos[-1]:  # the Hub said so earlier in this process: do not ask again
            missing.append(repo)
            continue
        if len(repos) > 1:
            say(f"course_utils: {role}: trying {repo} on {constants.ENDPOINT} ({n + 1} of {len(repos)})")
        try:
            return repo, attempt(repo)
        except RepoMissing as err:
            _MISSING.add(repo)
            missing.append(repo)
            if repo != repos[-1]:
                say(f"course_utils: {role}: {repo} is missing there; trying the next known copy")
            last = err
    if len(repos) == 1:
        raise last
    raise RepoMissing(
        f"None of {role}'s known repositories is on {constants.ENDPOINT}: {', '.join(missing)}.\n"
        + str(last).split("\n", 1)[1]
    )


def hub_file(repo_id: str, filename: str, repo_type: str = "model") -> Path:
    """One file of a Hub repository: from ``COURSE_MODELS_DIR``, the cache, or downloaded.

    Args:
        repo_id (`str`): e.g. ``"gsdf/EasyNegative"``.
        filename (`str`): the file's path inside the repository.
        repo_type (`str`, defaults to ``"model"``): ``"model"`` or ``"dataset"``.

    Returns:
        `Path`: the local file.

    Raises:
        RepoMissing: the Hub answered that the repository or file does not exist.
        CourseError: not in ``COURSE_MODELS_DIR``, not cached and the Hub unreachable (the three ways out).
    """
    from huggingface_hub import hf_hub_download

    local = os.environ.get("COURSE_MODELS_DIR")
    if local and (Path(local) / repo_id / filename).is_file():
        return Path(local) / repo_id / filename
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type))
    except Exception as err:  # missing repository or file; offline, DNS failure, proxy, ...
        raise course_error(repo_id, err) from None


def lora_source(repo_id: str = LCM_LORA_REPO, filename: str = LCM_LORA_FILE) -> str:
    """What to pass to ``pipe.load_lora_weights`` for a Hub LoRA: the folder holding its file.

    ``COURSE_MODELS_DIR/<repo_id>``, or the Hub cache's snapshot (downloaded first when needed; see
    :func:`hub_file`).
    """
    return str(hub_file(repo_id, filename).parent)
