"""Single-file checkpoints: one ``.safetensors`` file in the original Stable Diffusion layout (lesson 07).

Lesson 07 derives what is here: loading such a file (§2), what is inside it (§3) and why pickled
``.ckpt`` files are refused (§4).

Sites such as CIVITAI distribute a fine-tuned Stable Diffusion 1.5 as ONE file whose keys
follow the original (CompVis / LDM) code, not diffusers' folders:

* ``model.diffusion_model.*``                      - the UNet (``input_blocks``, ``middle_block``, ``output_blocks``)
* ``first_stage_model.*``                          - the VAE (``encoder.down``, ``decoder.up``, ``mid.attn_1``)
* ``cond_stage_model.transformer.text_model.*``    - the CLIP text encoder

diffusers reads such a file with ``StableDiffusionPipeline.from_single_file`` (its
``loaders/single_file_utils.py`` converts original -> diffusers), but ships no converter
the other way. :func:`to_original_state_dict` is that inverse, derived from a model's
config (any number of blocks, any ``layers_per_block``; it lives in the model layer,
``course_utils.models.original_layout``, because training writes the `tiny` single file with it),
so the course can write its own single-file `tiny` checkpoint and prove that
``from_single_file`` reads it back exactly.

:func:`load_single_file` refuses pickled ``.ckpt`` / ``.pt`` / ``.bin`` files unless the
caller opts in: unpickling can run arbitrary code, a ``.safetensors`` file only holds tensors.
"""

import json
import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path

import torch

from .errors import CourseError
from .models.original_layout import (  # the key layout, derived in the model layer (training writes such files too)
    PREFIXES,
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    key_mapping,
    save_single_file,
    to_original_state_dict,
    unet_prefix_map,
    vae_prefix_map,
)


def pickle_refusal_message(path) -> str:
    """Why the course will not load a pickled checkpoint by default, and how to opt in.

    The refusal lesson 07, §4 shows (raised by :func:`load_single_file`).

    Args:
        path (`str` or `os.PathLike`): the refused file.

    Returns:
        `str`: the message of the `CourseError`.
    """
    return (
        f"Refusing to load {Path(str(path)).name}: it is a pickled PyTorch checkpoint. Unpickling can run any "
        "code stored in the file (pickle rebuilds objects by calling functions named inside it), so a "
        "downloaded .ckpt/.pt/.bin can do anything your account can. A .safetensors file only holds a JSON "
        "header and raw tensor bytes, so loading it runs no code: prefer the .safetensors version of a model "
        "(CIVITAI and the Hub offer one for almost every model).\n"
        "If you trust the file's source, pass allow_pickle=True. diffusers then reads it with "
        "torch.load(weights_only=True) - a second line of defence that accepts only tensors and plain "
        "containers and refuses files that carry code."
    )


def load_single_file(path, config=None, allow_pickle: bool = False, pipeline_class=None, **kwargs):
    """Load a single-file checkpoint with ``from_single_file``, refusing pickled files by default.

    Lesson 07, §2 loads the community checkpoint with it; §4 derives the refusal of pickled files.

    Args:
        path (`str` or `os.PathLike`): a local ``.safetensors`` file (or a Hub URL to one).
        config (`str` or `os.PathLike`, *optional*): a diffusers folder (or Hub id) with the pipeline's
            configs (``model_index.json``, ``unet/config.json``, tokenizer, scheduler, ...); the file
            holds only weights. Without it diffusers infers the model type from the file's keys and
            shapes (``infer_diffusers_model_type``) and downloads that type's default configs from the
            Hub (SD 1.5's repository for an SD 1.5 fine-tune). Pass it offline (a local folder) or to
            override the guess (the `tiny` checkpoint has SD 1.5's keys but not its sizes).
        allow_pickle (`bool`, defaults to `False`): accept a pickled ``.ckpt``/``.pt``/``.bin``.
        pipeline_class (`type`, *optional*): defaults to ``StableDiffusionPipeline``.
        **kwargs: passed to ``from_single_file`` (e.g. ``dtype=torch.float16``). ``local_files_only``
            defaults to `True` when ``config`` is a local folder.

    Returns:
        `DiffusionPipeline`: the pipeline.

    Raises:
        CourseError: a pickled file without ``allow_pickle=True``, a missing file, or a pickled
            file that ``torch.load(weights_only=True)`` refuses because it carries code.
    """
    from diffusers import StableDiffusionPipeline

    name = str(path)
    is_url = name.startswith(("http://", "https://"))
    if not is_url and not Path(name).is_file():
        raise CourseError(
            f"No checkpoint file at {name}: check the path (a single-file checkpoint is one file, not a folder)."
        )
    suffix = os.path.splitext(name.split("?")[0])[1].lower()
    if suffix != ".safetensors" and not allow_pickle:
        raise CourseError(pickle_refusal_message(name))
    kwargs.setdefault("local_files_only", config is not None and os.path.isdir(str(config)))
    if config is not None:
        kwargs["config"] = str(config)
    if kwargs.get("dtype") == torch.float32 and not is_url and suffix == ".safetensors":
        stored = {v["dtype"] for k, v in read_header(name).items() if k != "__metadata__"}
        if stored == {"F32"}:  # already fp32: casting would only log a needless warning about fp32 modules
            kwargs.pop("dtype")
    cls = pipeline_class or StableDiffusionPipeline
    try:
        return cls.from_single_file(name, **kwargs)
    except OSError as err:
        cause = err
        while cause is not None and not isinstance(cause, pickle.UnpicklingError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        lines = [line.strip() for line in str(cause).splitlines()]
        detail = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
        detail = detail.split(". Please use")[0]  # keep the what, drop torch's how-to-allowlist advice
        raise CourseError(
            f"torch.load(weights_only=True) refused {Path(name).name}: it holds more than tensors ({detail}). "
            "A checkpoint that asks to call functions while loading is what a malicious file looks like: do not "
            "load it with weights_only=False; get the .safetensors version instead."
        ) from err


def read_header(path) -> dict:
    """The JSON header of a ``.safetensors`` file: every tensor's dtype, shape and byte range, and ``__metadata__``.

    A ``.safetensors`` file is 8 bytes (header length, little-endian) + this JSON + raw tensor bytes
    (lesson 07, §3; §4 explains why that layout runs no code).

    Args:
        path (`str` or `os.PathLike`): a ``.safetensors`` file.

    Returns:
        `dict`: tensor name -> ``{"dtype", "shape", "data_offsets"}``, and ``"__metadata__"`` if the file has it.
    """
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def group_keys(path_or_keys, depth: int | None = None) -> "OrderedDict[str, list[str]]":
    """The keys of a single-file checkpoint grouped by prefix (read from the header only: cheap for a 2 GB file).

    Lesson 07, §3 lists the file's three networks with it.

    Args:
        path_or_keys (`str`, `os.PathLike` or iterable of `str`): a ``.safetensors`` file or its keys.
        depth (`int`, *optional*): how many dotted parts make the prefix; by default the known
            component prefixes (``model.diffusion_model``, ``first_stage_model``,
            ``cond_stage_model.transformer``) and the first part of any other key.

    Returns:
        `OrderedDict[str, list[str]]`: prefix -> keys, largest group first.
    """
    if isinstance(path_or_keys, (str, os.PathLike)):
        keys = [k for k in read_header(path_or_keys) if k != "__metadata__"]
    else:
        keys = list(path_or_keys)
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        if depth is not None:
            prefix = ".".join(key.split(".")[:depth])
        else:
            prefix = next((p.rstrip(".") for p in PREFIXES.values() if key.startswith(p)), key.split(".")[0])
        groups.setdefault(prefix, []).append(key)
    return OrderedDict(sorted(groups.items(), key=lambda item: -len(item[1])))


__all__ = [
    "UNET_PREFIX",
    "VAE_PREFIX",
    "TEXT_ENCODER_PREFIX",
    "PREFIXES",
    "unet_prefix_map",
    "vae_prefix_map",
    "key_mapping",
    "to_original_state_dict",
    "save_single_file",
    "load_single_file",
    "pickle_refusal_message",
    "read_header",
    "group_keys",
]
