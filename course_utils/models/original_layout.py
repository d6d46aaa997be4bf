"""The original Stable Diffusion (CompVis / LDM) layout of a checkpoint's keys, and the writer of such files.

Sites such as CIVITAI distribute a fine-tuned Stable Diffusion 1.5 as ONE file whose keys follow
the original code, not diffusers' folders (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.text_model.*``). diffusers reads such a file
(``from_single_file``; ``loaders/single_file_utils.py`` converts original -> diffusers) but ships
no converter the other way. :func:`to_original_state_dict` is that inverse, derived from a
model's config (any number of blocks, any ``layers_per_block``), so ``training/`` can write the
`tiny` community model as one such file, and lesson 07 (§3, via ``course_utils.single_file``)
can show where each weight lives.
"""
from collections import OrderedDict
from pathlib import Path

from ..errors import CourseError

# The three networks' prefixes in an original-layout file (lesson 07, §3 groups the keys by them).
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
PREFIXES = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text_encoder": TEXT_ENCODER_PREFIX}

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

    The UNet rules of lesson 07, §3's renaming (``input_blocks`` -> ``down_blocks``, ...); :func:`key_mapping` uses it.

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

    The VAE rules of lesson 07, §3's renaming (decoder blocks numbered backwards); :func:`key_mapping` uses it.

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

    Lesson 07, §3 derives this: the inverse of the renaming ``from_single_file`` did.

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

    Lesson 07, §3 checks with it that the mapping is exact (the very numbers in the file).

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

    ``training/export.py`` wrote `tiny`'s ``data/tiny/community.safetensors`` with it: the file lesson 07, §2 loads
    and lesson 07, §3 takes apart.

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
