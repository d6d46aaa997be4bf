"""Helpers for the course "Stable Diffusion, taken apart": devices, models, images, visuals.

The notebooks import everything from here::

    import course_utils as cu
    choice = cu.setup()                   # prints profile, device, dtype and why
    pipe = cu.load_pipeline("text2img")   # the right model for this machine
"""
import logging
import os
import warnings

# transformers 5 says once that CLIPImageProcessor "requires torchvision" and falls back to its PIL
# twin. The course does not install torchvision off Colab (it pulls a multi-GB CUDA torch), and the
# PIL processor does the same job for the safety checker: drop just that note.
logging.getLogger("transformers.utils.import_utils").addFilter(
    lambda record: "requires torchvision (not installed)" not in record.getMessage()
)

from . import by_hand, community, img2img, inpaint, long_prompt, single_file, upscale, world
from .device import DEVICES, CourseError, describe_device, get_device, get_dtype
from .images import check_size, load_image, round_size, to_rgb
from .registry import (
    PROFILES,
    ROLES,
    SD15_REPOS,
    Choice,
    choose,
    default_settings,
    image_name,
    load_pipeline,
    model_source,
    prompt,
    resolve_model,
    setup,
)
from .steps import LatentRecorder
from .visual import decode_latents, grid, latent_to_image, step_slider, to_array

if os.environ.get("COURSE_STRICT_WARNINGS"):
    # Set by `make test`: any deprecation coming from the libraries (or from notebook code
    # calling them) becomes an error, so an outdated API fails the test run.
    warnings.filterwarnings("error", category=FutureWarning)
    warnings.filterwarnings("error", category=DeprecationWarning, module=r"(diffusers|transformers|huggingface_hub|__main__)")
# Not an outdated API of ours: torch 2.13's Tensor.__array__ lacks numpy 2's `copy` keyword, which
# numpy reports when diffusers' schedulers (DPM-Solver, Euler, ...) call np.array on a tensor.
warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword", category=DeprecationWarning)

__all__ = [
    "by_hand", "community", "img2img", "inpaint", "long_prompt", "single_file", "upscale", "world",
    "DEVICES", "CourseError", "describe_device", "get_device", "get_dtype",
    "check_size", "load_image", "round_size", "to_rgb",
    "PROFILES", "ROLES", "SD15_REPOS", "Choice", "choose", "default_settings", "image_name", "load_pipeline", "model_source",
    "prompt",
    "resolve_model", "setup",
    "LatentRecorder", "decode_latents", "grid", "latent_to_image", "step_slider", "to_array",
]
