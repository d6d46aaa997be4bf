"""Single-file checkpoints: one ``.safetensors`` file in the original Stable Diffusion layout.

Sites such as CIVITAI distribute a fine-tuned Stable Diffusion 1.5 as ONE file whose keys
follow the original (CompVis / LDM) code, not diffusers' folders:

* ``model.diffusion_model.*``                      - the UNet (``input_blocks``, ``middle_block``, ``output_blocks``)
* ``first_stage_model.*``                          - the VAE (``encoder.down``, ``decoder.up``, ``mid.attn_1``)
* ``cond_stage_model.transformer.text_model.*``    - the CLIP text encoder

diffusers reads such a file with ``StableDiffusionPipeline.from_single_file`` (its
``loaders/single_file_utils.py`` converts original -> diffusers), but ships no converter
the other way. :func:`to_original_state_dict` is that inverse, derived from a model's
config (any number of blocks, any ``layers_per_block``), so the course can write its own
single-file `tiny` checkpoint and prove that ``from_single_file`` reads it back exactly.

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

from .device import CourseError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
PREFIXES = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text_encoder": TEXT_ENCODER_PREFIX}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")

# Names inside one ResNet block: diffusers -> original (UNet and VAE use different originals).
_UNET_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_RESNET = (("conv_shortcut.", "nin_shortcut."),)
# The VAE's mid-block attention: diffusers uses Linear layers, the original 1x1 convolutions.
_VAE_ATTENTION = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def _layers_per_block(config) -> int:
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise CourseError(f"Only an integer layers_per_block is supported (got {layers!r}), as in SD 1.x.")
    return layers


def unet_prefix_map(config) -> dict:
    """Where each block of a diffusers ``UNet2DConditionModel`` lives in the original layout.

    Args:
        config (`dict`-like): the UNet's config (``down_block_types``, ``up_block_types``,
            ``layers_per_block``).

    Returns:
        `dict[str, tuple[str, tuple]]`: diffusers prefix -> (original prefix, renames inside the block).
        Original ``input_blocks.0`` is ``conv_in``; each down block adds ``layers_per_block``
        (ResNet, attention) pairs and a downsampler; ``output_blocks`` hold
        ``layers_per_block + 1`` layers per up block, the upsampler after the attention.
    """
    lpb = _layers_per_block(config)
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    out = {
        "conv_in.": ("input_blocks.0.0.", ()),
        "time_embedding.linear_1.": ("time_embed.0.", ()),
        "time_embedding.linear_2.": ("time_embed.2.", ()),
        "conv_norm_out.": ("out.0.", ()),
        "conv_out.": ("out.2.", ()),
        "mid_block.resnets.0.": ("middle_block.0.", _UNET_RESNET),
        "mid_block.attentions.0.": ("middle_block.1.", ()),
        "mid_block.resnets.1.": ("middle_block.2.", _UNET_RESNET),
    }
    i = 1
    for b in range(len(down)):
        for layer in range(lpb):
            out[f"down_blocks.{b}.resnets.{layer}."] = (f"input_blocks.{i}.0.", _UNET_RESNET)
            out[f"down_blocks.{b}.attentions.{layer}."] = (f"input_blocks.{i}.1.", ())
            i += 1
        if b < len(down) - 1:
            out[f"down_blocks.{b}.downsamplers.0.conv."] = (f"input_blocks.{i}.0.op.", ())
            i += 1
    i = 0
    for b, block_type in enumerate(up):
        for layer in range(lpb + 1):
            out[f"up_blocks.{b}.resnets.{layer}."] = (f"output_blocks.{i}.0.", _UNET_RESNET)
            out[f"up_blocks.{b}.attentions.{layer}."] = (f"output_blocks.{i}.1.", ())
            if layer == lpb and b < len(up) - 1:
                slot = 2 if "CrossAttn" in block_type else 1  # after the attention, if there is one
                out[f"up_blocks.{b}.upsamplers.0.conv."] = (f"output_blocks.{i}.{slot}.conv.", ())
            i += 1
    return out


def vae_prefix_map(config) -> dict:
    """Where each block of a diffusers ``AutoencoderKL`` lives in the original layout.

    The original decoder numbers its up blocks from the *bottom* (``decoder.up.3`` runs
    first), diffusers from the top (``decoder.up_blocks.0`` runs first).

    Args:
        config (`dict`-like): the VAE's config (``down_block_types``, ``up_block_types``, ``layers_per_block``).

    Returns:
        `dict[str, tuple[str, tuple]]`: diffusers prefix -> (original prefix, renames inside the block).
    """
    lpb = _layers_per_block(config)
    n_down, n_up = len(config["down_block_types"]), len(config["up_block_types"])
    out = {"quant_conv.": ("quant_conv.", ()), "post_quant_conv.": ("post_quant_conv.", ())}
    for side in ("encoder", "decoder"):
        out[f"{side}.conv_in."] = (f"{side}.conv_in.", ())
        out[f"{side}.conv_out."] = (f"{side}.conv_out.", ())
        out[f"{side}.conv_norm_out."] = (f"{side}.norm_out.", ())
        out[f"{side}.mid_block.resnets.0."] = (f"{side}.mid.block_1.", _VAE_RESNET)
        out[f"{side}.mid_block.resnets.1."] = (f"{side}.mid.block_2.", _VAE_RESNET)
        out[f"{side}.mid_block.attentions.0."] = (f"{side}.mid.attn_1.", _VAE_ATTENTION)
    for i in range(n_down):
        for j in range(lpb):
            out[f"encoder.down_blocks.{i}.resnets.{j}."] = (f"encoder.down.{i}.block.{j}.", _VAE_RESNET)
        out[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = (f"encoder.down.{i}.downsample.conv.", ())
    for i in range(n_up):
        k = n_up - 1 - i
        for j in range(lpb + 1):
            out[f"decoder.up_blocks.{i}.resnets.{j}."] = (f"decoder.up.{k}.block.{j}.", _VAE_RESNET)
        out[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = (f"decoder.up.{k}.upsample.conv.", ())
    return out


def _rename(key: str, prefix_map: dict) -> str:
    for new_prefix, (old_prefix, renames) in prefix_map.items():
        if key.startswith(new_prefix):
            rest = key[len(new_prefix):]
            for new, old in renames:
                if rest.startswith(new):
                    rest = old + rest[len(new):]
                    break
            return old_prefix + rest
    raise CourseError(f"No original-layout name known for {key!r}: is this an SD 1.x-shaped model?")


def _text_encoder_key(key: str) -> str:
    # transformers >= 5.6 flattened CLIPTextModel: its keys lost the "text_model." prefix.
    return TEXT_ENCODER_PREFIX + (key if key.startswith("text_model.") else "text_model." + key)


def key_mapping(pipe) -> "OrderedDict[str, str]":
    """Original-layout key -> diffusers name (``"<component>.<key>"``) for every weight of ``pipe``.

    Args:
        pipe (`StableDiffusionPipeline`): any SD 1.x-shaped pipeline (UNet, VAE, CLIP text encoder).

    Returns:
        `OrderedDict[str, str]`: e.g. ``"model.diffusion_model.input_blocks.1.0.in_layers.0.weight"
        -> "unet.down_blocks.0.resnets.0.norm1.weight"``.
    """
    mapping = OrderedDict()
    unet_map, vae_map = unet_prefix_map(pipe.unet.config), vae_prefix_map(pipe.vae.config)
    for key in pipe.unet.state_dict():
        mapping[UNET_PREFIX + _rename(key, unet_map)] = f"unet.{key}"
    for key in pipe.vae.state_dict():
        mapping[VAE_PREFIX + _rename(key, vae_map)] = f"vae.{key}"
    for key in pipe.text_encoder.state_dict():
        mapping[_text_encoder_key(key)] = f"text_encoder.{key}"
    return mapping


def to_original_state_dict(pipe) -> dict:
    """The weights of ``pipe`` under their original Stable Diffusion (LDM / CIVITAI) names.

    The inverse of diffusers' ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``
    and ``convert_ldm_clip_checkpoint``: keys are renamed, and the VAE attention's Linear
    weights ``[c, c]`` become the original 1x1 convolution weights ``[c, c, 1, 1]``.

    Args:
        pipe (`StableDiffusionPipeline`): an SD 1.x-shaped pipeline.

    Returns:
        `dict[str, torch.Tensor]`: contiguous CPU tensors, ready for ``safetensors.torch.save_file``.
    """
    components = {"unet": pipe.unet.state_dict(), "vae": pipe.vae.state_dict(), "text_encoder": pipe.text_encoder.state_dict()}
    out = {}
    for original, name in key_mapping(pipe).items():
        component, key = name.split(".", 1)
        tensor = components[component][key].detach().to("cpu")
        if component == "vae" and ".mid.attn_1." in original and original.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # Linear -> 1x1 conv, as the original VAE stores it
        out[original] = tensor.contiguous()
    return out


def save_single_file(pipe, path, metadata: dict | None = None) -> Path:
    """Write ``pipe`` as one ``.safetensors`` file in the original layout (as CIVITAI distributes models).

    Args:
        pipe (`StableDiffusionPipeline`): an SD 1.x-shaped pipeline.
        path (`str` or `os.PathLike`): the file to write; must end in ``.safetensors``.
        metadata (`dict[str, str]`, *optional*): text stored in the file's header.

    Returns:
        `Path`: ``path``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CourseError(f"{path.name}: a single-file checkpoint is written as .safetensors, not {path.suffix or 'no suffix'}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(to_original_state_dict(pipe), str(path), metadata={"format": "pt", **(metadata or {})})
    return path


def pickle_refusal_message(path) -> str:
    """Why the course will not load a pickled checkpoint by default, and how to opt in."""
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


def load_single_file(path, config, allow_pickle: bool = False, pipeline_class=None, **kwargs):
    """Load a single-file checkpoint with ``from_single_file``, refusing pickled files by default.

    Args:
        path (`str` or `os.PathLike`): a local ``.safetensors`` file (or a Hub URL to one).
        config (`str` or `os.PathLike`): a diffusers folder (or Hub id) with the pipeline's configs
            (``model_index.json``, ``unet/config.json``, tokenizer, scheduler, ...); the file
            holds only weights. For SD 1.5 fine-tunes that is SD 1.5's own repository.
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
        raise CourseError(f"No checkpoint file at {name}: check the path (a single-file checkpoint is one file, not a folder).")
    suffix = os.path.splitext(name.split("?")[0])[1].lower()
    if suffix != ".safetensors" and not allow_pickle:
        raise CourseError(pickle_refusal_message(name))
    kwargs.setdefault("local_files_only", os.path.isdir(str(config)))
    if kwargs.get("dtype") == torch.float32 and not is_url and suffix == ".safetensors":
        stored = {v["dtype"] for k, v in read_header(name).items() if k != "__metadata__"}
        if stored == {"F32"}:  # already fp32: casting would only log a needless warning about fp32 modules
            kwargs.pop("dtype")
    cls = pipeline_class or StableDiffusionPipeline
    try:
        return cls.from_single_file(name, config=str(config), **kwargs)
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

    A ``.safetensors`` file is 8 bytes (header length, little-endian) + this JSON + raw tensor bytes.
    """
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def group_keys(path_or_keys, depth: int | None = None) -> "OrderedDict[str, list[str]]":
    """The keys of a single-file checkpoint grouped by prefix (read from the header only: cheap for a 2 GB file).

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
    "UNET_PREFIX", "VAE_PREFIX", "TEXT_ENCODER_PREFIX", "PREFIXES", "PICKLE_SUFFIXES",
    "unet_prefix_map", "vae_prefix_map", "key_mapping", "to_original_state_dict", "save_single_file",
    "load_single_file", "pickle_refusal_message", "read_header", "group_keys",
]
