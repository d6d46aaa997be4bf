"""Helpers for the course "Stable Diffusion, taken apart": devices, models, images, visuals.

The notebooks import everything from here::

    import course_utils as cu
    choice = cu.setup()                   # prints profile, device, dtype and why
    pipe = cu.load_pipeline("text2img")   # the right model for this machine
"""
import os
import warnings

from .device import CourseError, describe_device, get_device, get_dtype
from .images import check_size, load_image, round_size, to_rgb
from .registry import (
    PROFILES,
    ROLES,
    SD15_REPOS,
    Choice,
    choose,
    default_settings,
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

__all__ = [
    "CourseError", "describe_device", "get_device", "get_dtype",
    "check_size", "load_image", "round_size", "to_rgb",
    "PROFILES", "ROLES", "SD15_REPOS", "Choice", "choose", "default_settings", "load_pipeline", "model_source", "prompt",
    "resolve_model", "setup",
    "LatentRecorder", "decode_latents", "grid", "latent_to_image", "step_slider", "to_array",
]
