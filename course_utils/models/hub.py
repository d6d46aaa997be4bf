"""Where the `sd15` profile's weights come from: a local folder, the Hub cache, or the Hub (or a mirror).

Every Hugging Face Hub repository the course uses is named here and nowhere else. The lookup
order is the same for every file the course loads:

1. ``COURSE_MODELS_DIR/<repo id>/...`` - a folder made by ``python -m course_utils download sd15``;
2. the Hub cache (``HF_HOME``), without asking the network;
3. the Hub itself, or the mirror ``HF_ENDPOINT`` names (never when ``HF_HUB_OFFLINE=1``).

When all three fail the error says so and names the three ways out (:func:`unreachable_message`).
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


def hub_offline() -> bool:
    """`True` when ``HF_HUB_OFFLINE`` says never to go online (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def local_folder(repo_id: str) -> Path | None:
    """``COURSE_MODELS_DIR/<repo_id>`` when it holds a diffusers pipeline (``model_index.json``), else `None`."""
    root = os.environ.get("COURSE_MODELS_DIR")
    if root and (Path(root) / repo_id / "model_index.json").exists():
        return Path(root) / repo_id
    return None


def cached(repo_id: str) -> str | None:
    """The Hub cache's snapshot folder of ``repo_id``, or `None` when it is not cached (no network is used)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        return None


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


def resolve_model(repo_id: str, check_hub: bool = True) -> str:
    """Find where to load ``repo_id`` from: a local folder, the Hub cache, or the Hub itself.

    Args:
        repo_id (`str`): a Hub id such as ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``.
        check_hub (`bool`, defaults to `True`): ask the Hub (10 s timeout) whether it answers.

    Returns:
        `str`: a folder (``COURSE_MODELS_DIR/<repo_id>`` or the cache snapshot) or ``repo_id``
        itself when it will be downloaded (``HF_ENDPOINT`` picks the server).

    Raises:
        CourseError: neither reachable nor cached; the message names ``HF_ENDPOINT``, a
            local folder and ``COURSE_PROFILE=tiny``.
    """
    local = local_folder(repo_id) or cached(repo_id)
    if local:
        return str(local)
    if hub_offline():
        raise CourseError(unreachable_message(repo_id))
    if check_hub:
        from huggingface_hub import HfApi

        try:
            HfApi().model_info(repo_id, timeout=10)
        except Exception as err:  # DNS failure, refused connection, timeout, proxy error ...
            raise CourseError(unreachable_message(repo_id, err)) from None
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
        CourseError: not in ``COURSE_MODELS_DIR``, not cached and the Hub unreachable (the three ways out).
    """
    from huggingface_hub import hf_hub_download

    local = os.environ.get("COURSE_MODELS_DIR")
    if local and (Path(local) / repo_id / filename).is_file():
        return Path(local) / repo_id / filename
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type))
    except Exception as err:  # offline, DNS failure, proxy, ...
        raise CourseError(unreachable_message(repo_id, err)) from None


def lora_source(repo_id: str = LCM_LORA_REPO, filename: str = LCM_LORA_FILE) -> str:
    """What to pass to ``pipe.load_lora_weights`` for a Hub LoRA: its ``COURSE_MODELS_DIR`` folder, else the Hub id."""
    local = os.environ.get("COURSE_MODELS_DIR")
    if local and (Path(local) / repo_id / filename).is_file():
        return str(Path(local) / repo_id)
    return repo_id
