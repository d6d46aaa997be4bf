"""Where the `sd15` profile's weights come from: a local folder, the Hub cache, or the Hub (or a mirror).

Every Hugging Face Hub repository the course uses is named here and nowhere else. The lookup
order is the same for every file the course loads:

1. ``COURSE_MODELS_DIR/<repo id>/...`` - a folder made by ``python -m course_utils download sd15``;
2. the Hub cache (``HF_HOME``), without asking the network;
3. the Hub itself, or the mirror ``HF_ENDPOINT`` names (never when ``HF_HUB_OFFLINE=1``).

When all three fail the error says so and names the three ways out (:func:`unreachable_message`);
a repository the Hub (or mirror) does not have gets its own message (:func:`missing_message`), and
``COURSE_HUB_<ROLE>`` (e.g. ``COURSE_HUB_UPSCALE=<org>/<name>``) points a role at another copy.
"""
import os
from pathlib import Path

from ..errors import CourseError

# Each role's repository. RunwayML's stable-diffusion-v1-5 repository was removed from the Hub in
# 2024; stable-diffusion-v1-5/ is its official mirror.
SD15_REPOS = {
    "text2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "img2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "upscale": "stabilityai/stable-diffusion-x4-upscaler",
    "community": "gsdf/Counterfeit-V2.5",
}
# Repositories that publish fp16 weights as a ``variant="fp16"`` (the others are loaded, then cast).
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


def repo_id(role: str) -> str:
    """The Hub repository of ``role`` on the `sd15` profile: ``COURSE_HUB_<ROLE>`` if set, else :data:`SD15_REPOS`.

    Args:
        role (`str`): ``"text2img"``, ``"img2img"``, ``"inpaint"``, ``"upscale"`` or ``"community"``.

    Returns:
        `str`: e.g. ``"stabilityai/stable-diffusion-x4-upscaler"``; with ``COURSE_HUB_UPSCALE=me/x4`` set, ``"me/x4"``.
    """
    return os.environ.get(f"COURSE_HUB_{role.upper()}", "").strip() or SD15_REPOS[role]


def weight_patterns(variant: str | None) -> tuple[list[str], list[str]]:
    """``(allow_patterns, ignore_patterns)`` of the files a pipeline loads: configs, tokenizer, component weights.

    ``variant="fp16"``: the components' ``*.fp16.safetensors``; `None`: their default ``*.safetensors``.
    Never the repository's big single-file checkpoints at the top level. The download command and the
    cache lookup use the same patterns, so what one fetched the other finds.
    """
    configs = ["*.json", "*.txt", "*.model"]
    if variant:
        return configs + [f"*/*.{variant}.safetensors"], []
    return configs + ["*/*.safetensors"], ["*/*.fp16.safetensors", "*/*.non_ema.safetensors"]  # non_ema: SD 1.5's training copy


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
    """The Hub cache's snapshot folder of ``repo_id`` holding the weights of ``variant``, else `None` (no network).

    The lookup asks for the same files a download fetched (:func:`weight_patterns`): huggingface_hub
    records a repository's whole file list at download time, so a lookup without patterns fails as
    soon as any file of the repository was not downloaded (e.g. the fp32 weights next to fp16 ones).
    """
    from huggingface_hub import snapshot_download

    allow, ignore = weight_patterns(variant)
    try:
        return snapshot_download(repo_id, local_files_only=True, allow_patterns=allow, ignore_patterns=ignore or None)
    except Exception:
        return None


def folder_variant(folder, wanted: str | None) -> str | None:
    """The variant to load from a local ``folder``: ``wanted`` if its files are there, else the one that is.

    A folder downloaded for a GPU holds only ``*.fp16.safetensors``; on a CPU the course then loads
    those (``variant="fp16"``, upcast to ``dtype=float32``) rather than fail or download fp32 weights.
    A folder without fp16 files is loaded as it is (and cast, for a float16 run).
    """
    files = list(Path(folder).glob("*/*.safetensors"))
    fp16 = any(".fp16." in f.name for f in files)
    default = any(".fp16." not in f.name and ".non_ema." not in f.name for f in files)
    if wanted == "fp16":
        return "fp16" if fp16 else None
    return "fp16" if fp16 and not default else None


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
        f"     at a copy with {setting}=<org>/<name> before starting Python;\n"
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

    missing = (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, EntryNotFoundError, RemoteEntryNotFoundError)
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


def resolve_model(repo_id: str, check_hub: bool = True, variant: str | None = None, role: str | None = None,
                  download: bool = False) -> str:
    """Find where to load ``repo_id`` from: a local folder, the Hub cache, or the Hub itself.

    Args:
        repo_id (`str`): a Hub id such as ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``.
        check_hub (`bool`, defaults to `True`): ask the Hub (10 s timeout) whether it has the repository.
        variant (`str`, *optional*): the weights wanted (``"fp16"`` or `None`); a cache holding only the
            other kind is used too (see :func:`folder_variant`).
        role (`str`, *optional*): named in the message when the repository is missing.
        download (`bool`, defaults to `False`): when it is neither local nor cached, download the
            pipeline's files (:func:`weight_patterns`) into the cache and return that folder, instead of
            returning the id for ``from_pretrained`` to download. The course downloads itself so that
            the cache holds exactly what a later offline lookup asks for, and so that a mirror which
            only answers ``/revision/main`` metadata requests (olah offline) serves it too.

    Returns:
        `str`: a folder (``COURSE_MODELS_DIR/<repo_id>`` or the cache snapshot) or, without
        ``download``, ``repo_id`` itself when it would be downloaded (``HF_ENDPOINT`` picks the server).

    Raises:
        RepoMissing: the Hub answered that there is no such repository (or it is gated).
        CourseError: neither reachable nor cached; the message names ``HF_ENDPOINT``, a
            local folder and ``COURSE_PROFILE=tiny``.
    """
    local = local_folder(repo_id) or cached(repo_id, variant) or cached(repo_id, "fp16" if variant is None else None)
    if local:
        return str(local)
    if hub_offline():
        raise CourseError(unreachable_message(repo_id))
    if download:
        from huggingface_hub import snapshot_download

        allow, ignore = weight_patterns(variant)
        try:
            return snapshot_download(repo_id, allow_patterns=allow, ignore_patterns=ignore or None)
        except Exception as err:  # missing repository; or the network failed (even half-way: nothing half-written is kept)
            raise course_error(repo_id, err, role) from None
    if check_hub:
        from huggingface_hub import HfApi

        try:  # revision="main": the route both the Hub and a mirror such as olah answer
            HfApi().model_info(repo_id, revision="main", timeout=10)
        except Exception as err:  # missing repository; or DNS failure, refused connection, timeout, proxy error ...
            raise course_error(repo_id, err, role) from None
    return repo_id


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
