"""The original Stable Diffusion (CompVis / LDM) layout of a checkpoint's keys, and the writer of such files.

Sites such as CIVITAI distribute a fine-tuned Stable Diffusion 1.5 as ONE file whose keys follow
the original code, not diffusers' folders (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.text_model.*``). diffusers reads such a file
(``from_single_file``; ``loaders/single_file_utils.py`` converts original -> diffusers) but ships
no converter the other way. :func:`to_original_state_dict` is that inverse, derived from a
model's config (any number of blocks, any ``layers_per_block``), so ``training/`` can write the
`tiny` community model as one such file, and lesson 07 (§3, via ``course_utils.single_file``)
can show where each weight lives.

``models/lookalike.py`` writes the lookalike Hub repositories' single files with it too, so it also
knows what else such files carry: SD 2's OpenCLIP text encoder (the x4 upscaler's,
:func:`open_clip_state_dict`), LDM's noise-schedule buffers (:func:`schedule_buffers`) and the EMA copy
of the UNet (:func:`ema_state_dict`).
"""

from collections import OrderedDict
from pathlib import Path

from ..errors import CourseError

# The three networks' prefixes in an original-layout file (lesson 07, §3 groups the keys by them).
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
PREFIXES = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text_encoder": TEXT_ENCODER_PREFIX}
# SD 2 models (the x4 upscaler) hold an OpenCLIP text encoder instead, under other names (:func:`open_clip_state_dict`).
OPEN_CLIP_PREFIX = "cond_stage_model.model."

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
        "class_embedding.": ("label_emb.", ()),  # the x4 upscaler's noise-level embedding (num_class_embeds)
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
            rest = key[len(new_prefix) :]
            for new, old in renames:
                if rest.startswith(new):
                    rest = old + rest[len(new) :]
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


def open_clip_state_dict(text_encoder, prefix: str = OPEN_CLIP_PREFIX) -> dict:
    """A CLIP text encoder's weights under OpenCLIP's names, as SD 2 checkpoints (the x4 upscaler's) store them.

    The inverse of diffusers' ``convert_open_clip_checkpoint``: ``q_proj``/``k_proj``/``v_proj`` are fused
    into one ``attn.in_proj_weight`` ``[3 * width, width]``, ``layer_norm1`` is ``ln_1``, ``mlp.fc1`` is
    ``mlp.c_fc``, the position embedding is a bare tensor ``positional_embedding``.

    Args:
        text_encoder (`CLIPTextModel`): any depth; an SD 2 file holds all 24 OpenCLIP blocks, of which
            diffusers' text encoder keeps 23 (SD 2 reads the penultimate layer).
        prefix (`str`): ``"cond_stage_model.model."`` in SD 2 checkpoints.

    Returns:
        `dict[str, torch.Tensor]`: contiguous CPU tensors (no ``text_projection``/``logit_scale``: CLIPTextModel has neither).
    """
    import torch

    state = {k.removeprefix("text_model."): v.detach().to("cpu") for k, v in text_encoder.state_dict().items()}
    out = {
        prefix + "token_embedding.weight": state["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["final_layer_norm.weight"],
        prefix + "ln_final.bias": state["final_layer_norm.bias"],
    }
    renames = (
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
        ("self_attn.out_proj.", "attn.out_proj."),
    )
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([state[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"])
        for key, tensor in state.items():
            rest = key[len(src) :]
            if not key.startswith(src) or rest.startswith(
                ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")
            ):
                continue  # another layer's, or fused into in_proj above
            for new, old in renames:
                if rest.startswith(new):
                    out[dst + old + rest[len(new) :]] = tensor
                    break
            else:
                raise CourseError(f"No OpenCLIP name known for text encoder weight {key!r}.")
    return {k: v.contiguous() for k, v in out.items()}


def to_original_state_dict(pipe, text_encoder_layout: str = "clip") -> dict:
    """The weights of ``pipe`` under their original Stable Diffusion (LDM / CIVITAI) names.

    Lesson 07, §3 checks with it that the mapping is exact (the very numbers in the file).

    The inverse of diffusers' ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``
    and ``convert_ldm_clip_checkpoint``: keys are renamed, and the VAE attention's Linear
    weights ``[c, c]`` become the original 1x1 convolution weights ``[c, c, 1, 1]``.

    Args:
        pipe (`StableDiffusionPipeline`): an SD 1.x-shaped pipeline (or an x4 upscale pipeline).
        text_encoder_layout (`str`, defaults to ``"clip"``): ``"clip"`` (SD 1.x:
            ``cond_stage_model.transformer.text_model.*``) or ``"open_clip"`` (SD 2, the x4 upscaler:
            ``cond_stage_model.model.*``, see :func:`open_clip_state_dict`).

    Returns:
        `dict[str, torch.Tensor]`: contiguous CPU tensors, ready for ``safetensors.torch.save_file``.
    """
    if text_encoder_layout not in ("clip", "open_clip"):
        raise CourseError(f"text_encoder_layout must be 'clip' or 'open_clip', not {text_encoder_layout!r}.")
    components = {
        "unet": pipe.unet.state_dict(),
        "vae": pipe.vae.state_dict(),
        "text_encoder": pipe.text_encoder.state_dict(),
    }
    out = {}
    for original, name in key_mapping(pipe).items():
        component, key = name.split(".", 1)
        if component == "text_encoder" and text_encoder_layout != "clip":
            continue
        tensor = components[component][key].detach().to("cpu")
        if component == "vae" and ".mid.attn_1." in original and original.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # Linear -> 1x1 conv, as the original VAE stores it
        out[original] = tensor.contiguous()
    if text_encoder_layout == "open_clip":
        out.update(open_clip_state_dict(pipe.text_encoder))
    return out


def schedule_buffers(
    beta_start: float, beta_end: float, num_train_timesteps: int = 1000, prefix: str = "", posterior: bool = True
) -> dict:
    """The noise schedule an original checkpoint carries next to the weights (``betas``, ``alphas_cumprod``, ...).

    LDM's ``DDPM.register_schedule`` (``ldm/models/diffusion/ddpm.py``) saves these buffers with the model;
    ``AbstractLowScaleModel`` (the x4 upscaler's ``low_scale_model.``) the same without the posterior ones.
    LDM's "linear" schedule is diffusers' ``scaled_linear``: ``betas = linspace(sqrt(start), sqrt(end), n) ** 2``.
    ``from_single_file`` ignores them (the scheduler comes from the config folder).

    Returns:
        `dict[str, torch.Tensor]`: float32 vectors of length ``num_train_timesteps``, computed in float64 as LDM does.
    """
    import torch

    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    out = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1).sqrt(),
    }
    if posterior:
        variance = betas * (1.0 - prev) / (1.0 - cumprod)
        out.update(
            posterior_variance=variance,
            posterior_log_variance_clipped=variance.clamp(min=1e-20).log(),
            posterior_mean_coef1=betas * prev.sqrt() / (1.0 - cumprod),
            posterior_mean_coef2=(1.0 - prev) * alphas.sqrt() / (1.0 - cumprod),
        )
    return {prefix + k: v.float().contiguous() for k, v in out.items()}


def ema_state_dict(original: dict) -> dict:
    """The ``model_ema.*`` copy of an original file's UNet weights, under LDM's ``LitEma`` names.

    ``LitEma`` names each shadow weight after the parameter with its dots removed:
    ``model.diffusion_model.input_blocks.0.0.weight`` -> ``model_ema.diffusion_modelinput_blocks00weight``
    (what diffusers' ``convert_ldm_unet_checkpoint(extract_ema=True)`` reads back).

    Args:
        original (`dict[str, torch.Tensor]`): an original-layout state dict (its ``model.diffusion_model.*`` keys are used).
    """
    return {"model_ema." + "".join(k.split(".")[1:]): v for k, v in original.items() if k.startswith(UNET_PREFIX)}


def save_single_file(
    pipe, path, metadata: dict | None = None, dtype=None, extra: dict | None = None, text_encoder_layout: str = "clip"
) -> Path:
    """Write ``pipe`` as one ``.safetensors`` file in the original layout (as CIVITAI distributes models).

    ``training/export.py`` wrote `tiny`'s ``data/tiny/community.safetensors`` with it: the file lesson 07, §2 loads
    and lesson 07, §3 takes apart; ``models/lookalike.py`` writes the lookalike repositories' single files.

    Args:
        pipe (`StableDiffusionPipeline`): an SD 1.x-shaped pipeline (or an x4 upscaler, see ``text_encoder_layout``).
        path (`str` or `os.PathLike`): the file to write; must end in ``.safetensors``.
        metadata (`dict[str, str]`, *optional*): text stored in the file's header.
        dtype (`torch.dtype`, *optional*): cast every floating-point tensor to it (e.g. ``torch.float16``
            for a ``*_fp16.safetensors`` file); default: as they are.
        extra (`dict[str, torch.Tensor]`, *optional*): more tensors to store under their own names
            (e.g. :func:`schedule_buffers`, :func:`ema_state_dict`); they replace same-named ones.
        text_encoder_layout (`str`, defaults to ``"clip"``): see :func:`to_original_state_dict`.

    Returns:
        `Path`: ``path``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CourseError(
            f"{path.name}: a single-file checkpoint is written as .safetensors, not {path.suffix or 'no suffix'}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    state = to_original_state_dict(pipe, text_encoder_layout)
    state.update(extra or {})
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(state, str(path), metadata={"format": "pt", **(metadata or {})})
    return path
