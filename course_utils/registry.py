"""One registry of models, three profiles: which model each lesson loads, and from where.

* ``sd15`` - the real models from the Hugging Face Hub (or a mirror, cache or local folder).
* ``tiny`` - the course's own small models with SD 1.5's architecture; no network, seconds on a CPU.
* ``sd15-random`` - SD 1.5's full-size architecture with random weights, for speed/memory only.

Default: ``sd15`` where a CUDA GPU is present and the weights are reachable, else ``tiny``.
``COURSE_PROFILE`` overrides. Every choice is printed with the reason.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from .device import CourseError, describe_device, get_device, get_dtype

PROFILES = ("sd15", "tiny", "sd15-random")
ROLES = ("text2img", "img2img", "inpaint", "upscale", "community")

# The Hub repositories of the `sd15` profile. RunwayML's stable-diffusion-v1-5 repository was removed
# from the Hub in 2024; stable-diffusion-v1-5/ is its official mirror.
SD15_REPOS = {
    "text2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "img2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "upscale": "stabilityai/stable-diffusion-x4-upscaler",
    "community": "gsdf/Counterfeit-V2.5",
}

# Generation settings that suit each profile (a learner may pass others). `tiny`'s come from its
# model card (data/tiny/README.md): 64x64 is what it was trained on, and a model this small
# needs a gentler guidance than SD 1.5's 7.5.
DEFAULTS = {
    "sd15": dict(height=512, width=512, num_inference_steps=50, guidance_scale=7.5),
    "tiny": dict(height=64, width=64, num_inference_steps=25, guidance_scale=3.0),
    "sd15-random": dict(height=512, width=512, num_inference_steps=25, guidance_scale=7.5),
}

# Prompts the lessons use, by name. `tiny` only knows its synthetic world (course_utils.world:
# one coloured circle, square or triangle on a plain background), so it gets prompts of that world.
PROMPTS = {
    "sd15": {
        "astronaut": "a photograph of an astronaut riding a horse",
        "castle": "ghibli style, a fantasy landscape with castles",
        "cat": "a photograph of a cat sitting on a sofa",
        "negative": "blurry, low quality",
        "hat": "a photograph of an astronaut wearing a red knitted hat",
    },
    "tiny": {
        "astronaut": "a red circle on a blue background",
        "castle": "a yellow triangle on a black background",
        "cat": "a green square on a white background",
        "negative": "red",  # a colour to keep out of the picture
        "open_color": "a circle on a white background",  # leaves the circle's colour to the model (lesson 5); white is never a shape's colour
        "open_shape": "a red shape on a white background",  # leaves the shape to the model (lesson 5, exercise 4)
        "hat": "a green square on a blue background",  # what to paint into the masked box (the rest stays blue)
    },
}
PROMPTS["sd15-random"] = PROMPTS["sd15"]

# Input images the lessons use, by name: files in data/ (see data/README.md).
IMAGES = {
    "sd15": {"photo": "astronaut.png", "sketch": "sketch.png", "cat": "chelsea.png"},
    "tiny": {"photo": "tiny_scene.png", "sketch": "tiny_sketch.png", "cat": "tiny_scene2.png"},
}
IMAGES["sd15-random"] = IMAGES["sd15"]


@dataclass
class Choice:
    """What the course runs on: ``profile``, ``device``, ``dtype`` and the ``reason`` for the profile."""

    profile: str
    device: str
    dtype: torch.dtype
    reason: str

    def __str__(self) -> str:
        return f"profile={self.profile} device={describe_device(self.device)} dtype={str(self.dtype).replace('torch.', '')} ({self.reason})"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _local_folder(repo_id: str) -> Path | None:
    root = os.environ.get("COURSE_MODELS_DIR")
    if root and (Path(root) / repo_id / "model_index.json").exists():
        return Path(root) / repo_id
    return None


def _cached(repo_id: str) -> str | None:
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
        f"{' (HF_HUB_OFFLINE is set)' if _hub_offline() else ''} and the model is not in the cache "
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
    local = _local_folder(repo_id) or _cached(repo_id)
    if local:
        return str(local)
    if _hub_offline():
        raise CourseError(unreachable_message(repo_id))
    if check_hub:
        from huggingface_hub import HfApi

        try:
            HfApi().model_info(repo_id, timeout=10)
        except Exception as err:  # DNS failure, refused connection, timeout, proxy error ...
            raise CourseError(unreachable_message(repo_id, err)) from None
    return repo_id


def choose(role: str = "text2img", profile: str | None = None, device: str | None = None) -> Choice:
    """Decide profile, device and dtype, and say why.

    Args:
        role (`str`): the pipeline role (see ``ROLES``); its `sd15` repo is the one checked.
        profile (`str`, *optional*): force a profile; default ``COURSE_PROFILE`` or the rule below.
        device (`str`, *optional*): force a device; default :func:`get_device`.

    The rule: ``sd15`` when there is a CUDA GPU and the weights are reachable (Hub, mirror,
    cache or ``COURSE_MODELS_DIR``), otherwise ``tiny``.
    """
    if role not in ROLES:
        raise CourseError(f"Unknown role {role!r}; expected one of {ROLES}.")
    device = device or get_device()
    dtype = get_dtype(device)
    env = os.environ.get("COURSE_PROFILE", "").strip()
    if profile or env:
        profile = profile or env
        if profile not in PROFILES:
            raise CourseError(f"Unknown profile {profile!r}; expected one of {PROFILES}.")
        return Choice(profile, device, dtype, "chosen by the caller" if not env else f"COURSE_PROFILE={env}")
    if device != "cuda":
        return Choice("tiny", device, dtype, "no CUDA GPU here, so the offline teaching model; COURSE_PROFILE=sd15 forces the real one")
    try:
        resolve_model(SD15_REPOS[role])
    except CourseError:
        return Choice("tiny", device, dtype, "CUDA found, but SD 1.5 is neither cached nor reachable; see HF_ENDPOINT / COURSE_MODELS_DIR")
    return Choice("sd15", device, dtype, "CUDA GPU found and SD 1.5 reachable")


def setup(role: str = "text2img") -> Choice:
    """Print and return the course's choice of profile, device and dtype (call once per notebook)."""
    choice = choose(role)
    print("course_utils:", choice)
    return choice


# Where each role's offline models come from: a module of course_utils with two functions,
# ``tiny_pipeline(cls, dtype)`` and ``sd15_random_pipeline(cls, dtype)``, each returning a pipeline of class ``cls``.
ROLE_MODULES = {
    "text2img": "build",
    "img2img": "build",
    "inpaint": "inpaint",
    "upscale": "upscale",
    "community": "community",
}
# Hub repos that publish fp16 weights as a ``variant="fp16"`` (the others are loaded and then cast).
FP16_VARIANTS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "stabilityai/stable-diffusion-x4-upscaler",
}


def pipeline_class(role: str) -> type:
    """The diffusers pipeline class of ``role`` (e.g. ``StableDiffusionInpaintPipeline`` for ``"inpaint"``)."""
    import diffusers

    names = {
        "text2img": "StableDiffusionPipeline",
        "img2img": "StableDiffusionImg2ImgPipeline",
        "inpaint": "StableDiffusionInpaintPipeline",
        "upscale": "StableDiffusionUpscalePipeline",
        "community": "StableDiffusionPipeline",
    }
    return getattr(diffusers, names[role])


def load_pipeline(role: str = "text2img", profile: str | None = None, device: str | None = None, **kwargs) -> DiffusionPipeline:
    """Load the pipeline for a lesson, on the right device, and print what was chosen.

    Args:
        role (`str`, defaults to ``"text2img"``): one of ``"text2img"``, ``"img2img"``,
            ``"inpaint"``, ``"upscale"``, ``"community"``.
        profile (`str`, *optional*): ``"sd15"``, ``"tiny"`` or ``"sd15-random"``; default from
            :func:`choose` (``COURSE_PROFILE`` or the GPU/Hub rule).
        device (`str`, *optional*): default :func:`get_device`.
        **kwargs: passed to ``from_pretrained`` for `sd15` (e.g. ``scheduler=...``).

    Returns:
        `DiffusionPipeline`: the pipeline, moved to the device, with ``dtype`` fp16 on CUDA
        and fp32 elsewhere.
    """
    import importlib

    choice = choose(role, profile, device)
    print(f"course_utils: role={role}", choice)
    cls = pipeline_class(role)
    if choice.profile == "sd15":
        repo = SD15_REPOS[role]
        source = resolve_model(repo)
        variant = "fp16" if choice.dtype == torch.float16 and repo in FP16_VARIANTS else None
        dtype = choice.dtype
        if role == "upscale":  # the x4 upscaler's VAE must stay fp32 (else diffusers upcasts it on every call)
            dtype = {"default": choice.dtype, "vae": torch.float32}
        pipe = cls.from_pretrained(source, dtype=dtype, variant=variant, **kwargs)
    else:
        module = importlib.import_module(f".{ROLE_MODULES[role]}", __package__)
        make = module.tiny_pipeline if choice.profile == "tiny" else module.sd15_random_pipeline
        pipe = make(cls, choice.dtype)
        if choice.profile == "tiny":
            pipe.set_progress_bar_config(disable=True)  # a tiny step takes milliseconds
    return pipe.to(choice.device)


def model_source(role: str = "text2img", profile: str | None = None) -> str:
    """Where ``from_pretrained`` loads a role's model from: a Hub id, a cache snapshot or a local folder.

    Handy for loading components one by one, e.g.
    ``UNet2DConditionModel.from_pretrained(cu.model_source(), subfolder="unet")``.

    Args:
        role (`str`): a role whose `tiny` model has a diffusers folder (text2img, img2img, inpaint, upscale);
            for ``"community"`` the `tiny` source is one ``.safetensors`` file (load it with ``from_single_file``).
        profile (`str`, *optional*): default from :func:`choose`. ``sd15-random`` has no folder.
    """
    import importlib

    profile = choose(role, profile).profile
    if profile == "sd15":
        return resolve_model(SD15_REPOS[role])
    module = importlib.import_module(f".{ROLE_MODULES[role]}", __package__)
    if profile == "tiny" and hasattr(module, "tiny_source"):
        return str(module.tiny_source())
    raise CourseError(f"The {profile!r} profile has no folder for role {role!r}: its models are built in memory; use load_pipeline().")


def default_settings(profile: str) -> dict:
    """Generation settings (height, width, steps, guidance) that suit ``profile``."""
    return dict(DEFAULTS[profile])


def image_name(name: str, profile: str) -> str:
    """The file in ``data/`` that the lessons call ``name`` (``"photo"``, ``"sketch"``, ``"cat"``) for ``profile``."""
    try:
        return IMAGES[profile][name]
    except KeyError:
        raise CourseError(f"No image {name!r} for profile {profile!r}; known: {sorted(IMAGES.get(profile, {}))}") from None


def prompt(name: str, profile: str) -> str:
    """The lesson prompt called ``name`` (e.g. ``"astronaut"``) for ``profile``."""
    try:
        return PROMPTS[profile][name]
    except KeyError:
        raise CourseError(f"No prompt {name!r} for profile {profile!r}; known: {sorted(PROMPTS.get(profile, {}))}") from None
