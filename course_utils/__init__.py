"""Helpers for the course "Stable Diffusion, taken apart": devices, models, images, visuals.

The notebooks import everything from here::

    import course_utils as cu
    choice = cu.setup()                   # prints profile, device, dtype and why
    pipe = cu.load_pipeline("text2img")   # the right model for this machine

Importing the package is cheap and changes nothing global: each name below is imported from
its module the first time it is used (so ``import course_utils`` does not import torch or
diffusers), and only :func:`setup` installs warning filters. The layers, bottom up:

* ``errors``, ``paths``, ``device``, ``precision``, ``latents``, ``edges``, ``requirements`` - the basics
  (``precision``: half-precision training; ``latents``: the latent cache and its draw, for lesson 10 and
  ``training/``; ``edges``: the Canny edge maps ControlNets read, for lesson 11 and ``training/``; ``requirements``:
  the pins);
* ``models`` - the model layer: architectures, where weights come from, builders, the registry;
* ``world``, ``scores`` - `tiny`'s synthetic world, its classifier, and the one text-to-image scorer;
* lesson modules - one mechanism each: ``by_hand``, ``img2img``, ``inpaint`` (and its ``masks``), ``upscale``,
  ``long_prompt``, ``community``, ``single_file``, ``visual``, ``steps``, ``images``, ``diagrams``,
  ``diagrams_steps``, ``text_embeddings``, ``unet_inside``, ``new_concept``, ``controlnet``;
* ``notebook`` (``setup``), and lesson 9's ``measuring``, ``levers``, ``full_size`` and ``gpu_memory`` (its
  measurements and estimates; ``gpu_memory_counter`` and ``gpu_memory_work`` count and run the estimates' work) -
  what notebooks call;
* ``commands`` - what an operator runs (``python -m course_utils ...``; the package's docstring lists them).
"""

import importlib

from .errors import CourseError

# Public name -> the module below course_utils that defines it (diffusers' lazy-module pattern): `cu.grid` imports
# course_utils.visual on first use. tests/test_layers.py reads this table as this file's imports.
_NAMES = {
    **dict.fromkeys(("DEVICES", "DTYPES", "cast", "describe_device", "get_device", "get_dtype"), "device"),
    **dict.fromkeys(("check_size", "load_image", "round_size", "to_rgb", "to_tensor"), "images"),
    **dict.fromkeys(("ROLES", "Choice", "choose", "load_pipeline", "model_source"), "models.registry"),
    **dict.fromkeys(("PROFILES", "default_settings", "image_name", "prompt"), "models.profiles"),
    **dict.fromkeys(("SD15_REPOS", "resolve_model"), "models.hub"),
    **dict.fromkeys(("decode_latents", "grid", "latent_to_image", "step_slider", "to_array"), "visual"),
    "LatentRecorder": "steps",
    "setup": "notebook",
}
# Modules reachable as attributes: the lesson modules, the world and the model layer (cu.world.classify(...)).
_MODULES = (
    "by_hand",
    "community",
    "controlnet",
    "diagrams",
    "diagrams_steps",
    "edges",
    "gpu_memory",
    "img2img",
    "inpaint",
    "latents",
    "long_prompt",
    "masks",
    "new_concept",
    "precision",
    "scores",
    "single_file",
    "text_embeddings",
    "unet_inside",
    "upscale",
    "world",
    "models",
)


def __getattr__(name: str):
    """Import a public name (or module) on first use: ``cu.grid`` imports ``course_utils.visual``."""
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    else:
        raise AttributeError(f"module 'course_utils' has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain attribute
    return value


__all__ = ["CourseError", *_NAMES, *_MODULES]
