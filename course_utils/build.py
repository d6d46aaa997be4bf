"""Offline models: the trained `tiny` profile (``data/tiny``) and the random `sd15-random` one.

Nothing here downloads anything. The `tiny` models were trained by this repository
(``python -m training``) and ship in ``data/tiny`` as fp16 safetensors; pipelines that share
their parts (inpainting, upscaling) are assembled once into a cache folder and loaded back
with ``from_pretrained`` - the same call a learner uses for a Hub model. `sd15-random` is
SD 1.5's full-size architecture with seeded random weights, for speed and memory only. The
tokenizer is CLIP's real one, shipped in ``data/clip_tokenizer``.
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from . import configs
from .paths import DATA_DIR

TOKENIZER_DIR = DATA_DIR / "clip_tokenizer"
TINY_DIR = DATA_DIR / "tiny"  # the trained tiny models (see data/tiny/README.md)


def cache_dir() -> Path:
    """Folder where built `tiny` models are stored (``COURSE_CACHE``, default ``~/.cache/sd-course``)."""
    return Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "sd-course"))


def load_tokenizer() -> CLIPTokenizer:
    """CLIP's tokenizer (the one SD 1.5 uses), loaded from ``data/clip_tokenizer`` with no network."""
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def make_scheduler() -> PNDMScheduler:
    """SD 1.5's default scheduler: PNDM with SD 1.5's noise schedule (see ``configs.SD15_SCHEDULER``)."""
    return PNDMScheduler.from_config(configs.SD15_SCHEDULER)


def text2img_components(text_cfg: dict, unet_cfg: dict, vae_cfg: dict, seed: int = configs.TINY_SEED) -> dict:
    """Create the five components of a text-to-image pipeline with seeded random weights.

    Args:
        text_cfg (`dict`): ``CLIPTextConfig`` arguments.
        unet_cfg (`dict`): ``UNet2DConditionModel`` arguments.
        vae_cfg (`dict`): ``AutoencoderKL`` arguments.
        seed (`int`): seed for the random initialisation; the same seed gives the same weights.

    Returns:
        `dict`: keyword arguments for ``StableDiffusionPipeline`` (no safety checker).
    """
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**unet_cfg)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**vae_cfg)
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(),
        unet=unet,
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def cached_build(name: str, spec: dict, builder) -> Path:
    """Return the folder of a saved pipeline, building it first if it is not in the cache.

    Args:
        name (`str`): a short name, e.g. ``"tiny-text2img"``.
        spec (`dict`): everything the build depends on; its hash names the folder, so a
            changed config builds a new model instead of reusing a stale one.
        builder (`Callable[[], DiffusionPipeline]`): makes the pipeline to save.

    Returns:
        `Path`: a folder that ``from_pretrained`` can load.
    """
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    folder = cache_dir() / f"{name}-{digest}"
    if (folder / "model_index.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        builder().save_pretrained(tmp)
        try:
            tmp.rename(folder)  # atomic: a half-written model is never seen
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def tiny_source() -> Path:
    """The folder ``from_pretrained`` loads the `tiny` text-to-image model from."""
    return tiny_text2img_folder()


def tiny_file(*parts: str) -> Path:
    """A file or folder of the trained `tiny` models, e.g. ``tiny_file("text2img")``.

    Raises:
        `CourseError`: when it is missing, saying how to get it back.
    """
    path = TINY_DIR.joinpath(*parts)
    if not path.exists():
        from .device import CourseError

        raise CourseError(
            f"{path} is missing. The trained tiny models ship with the repository in {TINY_DIR}: "
            "clone it again (or `git checkout -- data/tiny`), or retrain them with `python -m training all` "
            "and `python -m training export --out training/runs --to data/tiny`."
        )
    return path


def digest(*paths: Path) -> str:
    """A short hash of the files' bytes (folders: every file in them): names cache folders built from them."""
    h = hashlib.sha256()
    for path in paths:
        for f in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:10]


def tiny_text2img_folder() -> Path:
    """The trained `tiny` text-to-image model: a diffusers folder in ``data/tiny/text2img`` (~8 M parameters)."""
    folder = tiny_file("text2img")
    tiny_file("text2img", "model_index.json")
    return folder


def tiny_pipeline(cls=StableDiffusionPipeline, dtype: torch.dtype = torch.float32):
    """The `tiny` text-to-image model as a pipeline of class ``cls`` (text-to-image or image-to-image).

    Args:
        cls (`type`): ``StableDiffusionPipeline`` or ``StableDiffusionImg2ImgPipeline`` (same components).
        dtype (`torch.dtype`): weights dtype.
    """
    return cls.from_pretrained(tiny_text2img_folder(), dtype=dtype)


def sd15_random_pipeline(cls=StableDiffusionPipeline, dtype: torch.dtype = torch.float32):
    """SD 1.5's full-size text-to-image pipeline with random weights (~1 B parameters, ~4 GB in fp32).

    For speed and memory measurements only: the images are noise.

    Args:
        cls (`type`): ``StableDiffusionPipeline`` or ``StableDiffusionImg2ImgPipeline``.
        dtype (`torch.dtype`): weights dtype.
    """
    parts = text2img_components(configs.SD15_TEXT_ENCODER, configs.SD15_UNET, configs.SD15_VAE)
    pipe = cls(**parts)
    # Cast only when needed: diffusers 0.42 logs a (harmless, empty) "keep in float32" note on every cast.
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
