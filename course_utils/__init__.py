"""Helpers for the course "Stable Diffusion, taken apart": devices, models, images, visuals.

The notebooks import everything from here::

    import course_utils as cu
    choice = cu.setup()                   # prints profile, device, dtype and why
    pipe = cu.load_pipeline("text2img")   # the right model for this machine

Importing the package is cheap and changes nothing global: each name below is imported from
its module the first time it is used (so ``import course_utils`` does not import torch or
diffusers), and only :func:`setup` installs warning filters. The layers, bottom up:

* ``errors``, ``paths``, ``device``, ``precision`` - the basics (``precision``: half-precision training);
* ``models`` - the model layer: architectures, where weights come from, builders, the registry;
* ``world``, ``scores`` - `tiny`'s synthetic world, its classifier, and the one text-to-image scorer;
* lesson modules - one mechanism each: ``by_hand``, ``img2img``, ``inpaint``, ``upscale``,
  ``long_prompt``, ``community``, ``single_file``, ``visual``, ``steps``, ``images``;
* ``notebook`` (``setup``), ``evaluate``, ``bench`` and ``gpu_memory`` (lesson 9's measurements and estimates),
  ``cli`` - what notebooks and commands call.
"""
from .errors import CourseError

_DEVICE = ("DEVICES", "DTYPES", "describe_device", "get_device", "get_dtype")
_IMAGES = ("check_size", "load_image", "round_size", "to_rgb")
_REGISTRY = ("ROLES", "Choice", "choose", "load_pipeline", "model_source")
_PROFILES = ("PROFILES", "default_settings", "image_name", "prompt")
_HUB = ("SD15_REPOS", "resolve_model")
_VISUAL = ("decode_latents", "grid", "latent_to_image", "step_slider", "to_array")


def __getattr__(name: str):
    """Import a public name (or lesson module) on first use: ``cu.grid`` imports ``course_utils.visual``."""
    if name in _DEVICE:
        from . import device as module
    elif name in _IMAGES:
        from . import images as module
    elif name in _REGISTRY:
        from .models import registry as module
    elif name in _PROFILES:
        from .models import profiles as module
    elif name in _HUB:
        from .models import hub as module
    elif name in _VISUAL:
        from . import visual as module
    elif name == "LatentRecorder":
        from . import steps as module
    elif name == "setup":
        from . import notebook as module
    # lesson modules and the world, as attributes: cu.world.classify(...), cu.by_hand.denoise(...)
    # (`import course_utils.x`, not `from . import x`: the latter asks this very function first)
    elif name == "by_hand":
        import course_utils.by_hand as value
        return value
    elif name == "community":
        import course_utils.community as value
        return value
    elif name == "diagrams":
        import course_utils.diagrams as value
        return value
    elif name == "gpu_memory":
        import course_utils.gpu_memory as value
        return value
    elif name == "img2img":
        import course_utils.img2img as value
        return value
    elif name == "inpaint":
        import course_utils.inpaint as value
        return value
    elif name == "long_prompt":
        import course_utils.long_prompt as value
        return value
    elif name == "new_concept":
        import course_utils.new_concept as value
        return value
    elif name == "precision":
        import course_utils.precision as value
        return value
    elif name == "scores":
        import course_utils.scores as value
        return value
    elif name == "single_file":
        import course_utils.single_file as value
        return value
    elif name == "text_embeddings":
        import course_utils.text_embeddings as value
        return value
    elif name == "unet_inside":
        import course_utils.unet_inside as value
        return value
    elif name == "upscale":
        import course_utils.upscale as value
        return value
    elif name == "world":
        import course_utils.world as value
        return value
    elif name == "models":
        import course_utils.models as value
        return value
    else:
        raise AttributeError(f"module 'course_utils' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # the next access is a plain attribute
    return value


__all__ = [
    "CourseError", *_DEVICE, *_IMAGES, *_REGISTRY, *_PROFILES, *_HUB, *_VISUAL, "LatentRecorder", "setup",
    "by_hand", "community", "diagrams", "gpu_memory", "img2img", "inpaint", "long_prompt", "new_concept", "precision",
    "scores", "single_file", "text_embeddings",
    "unet_inside", "upscale", "world", "models",
]
