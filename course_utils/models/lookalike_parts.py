"""The random models inside the lookalike repositories (:mod:`.lookalike`): their configs per size, their seeds,
and the models themselves - SD 1.5-shaped pipelines with SD 1.5's safety checker, the x4 upscaler with the whole
OpenCLIP text model its single file holds, and the LoRAs' tensors (LCM-LoRA's, lesson 07's style LoRA's) in kohya's
key format.

Every architecture comes from :mod:`.configs` and every pipeline from :mod:`.builders`; the weights are seeded, so
the same size always gives the same numbers. :mod:`.lookalike_files` writes them out.
"""

import copy

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionUpscalePipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

from ..errors import CourseError
from . import builders, configs

SIZES = ("small", "full")

# Seeds of the random weights, per model (SD 1.5 and its inpainting model share text encoder and VAE, as the
# real ones do; Counterfeit is "another fine-tune"; the safety checker is the same file in every repository).
SEEDS = dict(
    sd15=configs.RANDOM_WEIGHTS_SEED,
    non_ema=1000,
    safety_checker=2000,
    counterfeit=100,
    counterfeit_v22=200,
    upscaler=300,
    lora=400,
    style_lora=700,
    embedding=500,
    controlnet=600,
)


def architecture(size: str) -> dict:
    """The configs a lookalike of ``size`` is built from (all from :mod:`.configs`).

    Args:
        size (`str`): ``"small"`` (`tiny`'s sizes) or ``"full"`` (SD 1.5's and the x4 upscaler's).

    Returns:
        `dict`: ``text``, ``unet``, ``inpaint_unet``, ``vae``, ``safety_checker``, ``x4_text``, ``x4_unet``,
        ``x4_vae`` (constructor arguments), ``lora`` and ``style_lora`` (rank, alpha, target modules) and
        ``controlnet_embedding`` (the ControlNet's ``conditioning_embedding_out_channels``).

    Raises:
        CourseError: ``size`` is neither ``"small"`` nor ``"full"``.
    """
    if size == "small":
        return dict(
            text=configs.TINY_TEXT_ENCODER,
            unet=configs.TINY_UNET,
            inpaint_unet=configs.TINY_INPAINT_UNET,
            vae=configs.TINY_SD15_VAE,
            safety_checker=configs.TINY_SAFETY_CHECKER,
            x4_text=configs.TINY_UPSCALER_TEXT_ENCODER,
            x4_unet=configs.TINY_UPSCALER_UNET,
            x4_vae=configs.TINY_UPSCALER_VAE,
            lora=configs.TINY_LCM_LORA,
            style_lora=configs.TINY_STYLE_LORA,
            controlnet_embedding=configs.SD15_CONTROLNET_EMBEDDING[:3],  # the VAE's 4x: two stride-2 convolutions
        )
    if size == "full":
        return dict(
            text=configs.SD15_TEXT_ENCODER,
            unet=configs.SD15_UNET,
            inpaint_unet=configs.SD15_INPAINT_UNET,
            vae=configs.SD15_VAE,
            safety_checker=configs.SD15_SAFETY_CHECKER,
            x4_text=configs.X4_UPSCALER_TEXT_ENCODER,
            x4_unet=configs.X4_UPSCALER_UNET,
            x4_vae=configs.X4_UPSCALER_VAE,
            lora=configs.LCM_LORA,
            style_lora=configs.STYLE_LORA,
            controlnet_embedding=configs.SD15_CONTROLNET_EMBEDDING,
        )
    raise CourseError(f"Unknown lookalike size {size!r}; expected one of {SIZES}.")


def safety_checker(arch: dict) -> tuple:
    """SD 1.5's safety checker and feature extractor, random (seeded).

    The 17 + 3 concept embeddings and their thresholds keep their constructed values (ones): the cosine
    similarity of an image to them is at most 1, so no image is flagged and none is blacked out.

    Args:
        arch (`dict`): from :func:`architecture`.

    Returns:
        `tuple`: ``(StableDiffusionSafetyChecker, CLIPImageProcessor)``.
    """
    torch.manual_seed(SEEDS["safety_checker"])
    checker = StableDiffusionSafetyChecker(CLIPConfig(**arch["safety_checker"])).eval()
    return checker, CLIPImageProcessor(**configs.SD15_FEATURE_EXTRACTOR)


def sd15_pipeline(arch: dict, seed: int, unet_cfg: dict | None = None, cls=StableDiffusionPipeline):
    """An SD 1.5-shaped pipeline with random weights and SD 1.5's safety checker (as the Hub repositories have).

    Args:
        arch (`dict`): from :func:`architecture`.
        seed (`int`): the seed of the text encoder, UNet and VAE (``builders.random_text2img_components``).
        unet_cfg (`dict`, *optional*): another UNet config (the 9-channel ``arch["inpaint_unet"]``); default
            ``arch["unet"]``.
        cls (`type`, defaults to `StableDiffusionPipeline`): the pipeline class.

    Returns:
        an instance of ``cls``, on the CPU in float32.
    """
    parts = builders.random_text2img_components(arch["text"], unet_cfg or arch["unet"], arch["vae"], seed=seed)
    parts["safety_checker"], parts["feature_extractor"] = safety_checker(arch)
    parts["requires_safety_checker"] = True
    return cls(**parts)


def random_unet(cfg: dict, seed: int) -> UNet2DConditionModel:
    """A UNet with random weights (SD 1.5's non-EMA UNet).

    Args:
        cfg (`dict`): its constructor arguments.
        seed (`int`): passed to ``torch.manual_seed`` before it is built.

    Returns:
        `UNet2DConditionModel`: on the CPU in float32.
    """
    torch.manual_seed(seed)
    return UNet2DConditionModel(**cfg)


def x4_pipeline(arch: dict):
    """The x4 upscaler with random weights, and the 1-block-deeper OpenCLIP text model its single file holds.

    SD 2's text encoder is OpenCLIP ViT-H with 24 blocks; SD 2 reads the penultimate layer, so diffusers'
    ``text_encoder`` keeps 23 (``num_hidden_layers``) and the checkpoint file all 24.

    Args:
        arch (`dict`): from :func:`architecture`.

    Returns:
        `tuple`: ``(StableDiffusionUpscalePipeline, CLIPTextModel)``, the pipeline and the whole text model.
    """
    cfg = CLIPTextConfig(**dict(arch["x4_text"], num_hidden_layers=arch["x4_text"]["num_hidden_layers"] + 1))
    torch.manual_seed(SEEDS["upscaler"])
    whole = CLIPTextModel(cfg)
    text_encoder = copy.deepcopy(whole)
    text_encoder.encoder.layers = text_encoder.encoder.layers[:-1]
    text_encoder.config.num_hidden_layers -= 1
    parts = builders.random_upscaler_components(text_encoder, arch["x4_unet"], arch["x4_vae"], seed=SEEDS["upscaler"])
    return StableDiffusionUpscalePipeline(**parts), whole


def lora_shapes(arch: dict, key: str = "lora") -> dict:
    """``{kohya layer name: (lora_down shape, lora_up shape)}`` for each layer ``arch[key]`` targets.

    The layer name is ``lora_unet_`` + the diffusers module path with dots as underscores, e.g.
    ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``, and for the text encoder (where the
    spec lists ``text_target_modules``) ``lora_te_`` + the transformers path, e.g.
    ``lora_te_text_model_encoder_layers_0_self_attn_q_proj``. Down is ``[rank, in]`` (``[rank, in, kh, kw]`` for a
    convolution), up ``[out, rank]`` (``[out, rank, 1, 1]``). Built on the meta device: no memory, any size.

    Args:
        arch (`dict`): from :func:`architecture` (its ``unet``, ``text`` and ``key``).
        key (`str`, defaults to ``"lora"``): ``"lora"`` (LCM-LoRA's layers) or ``"style_lora"`` (lesson 07's).

    Returns:
        `dict[str, tuple[tuple, tuple]]`: layer name -> ``(down shape, up shape)``.
    """
    spec = arch[key]
    with torch.device("meta"):
        models = [("lora_unet_", UNet2DConditionModel(**arch["unet"]), spec["target_modules"])]
        if spec.get("text_target_modules"):
            # kohya's names are transformers 4's paths (text_model.encoder...); transformers 5 drops "text_model."
            text = CLIPTextModel(CLIPTextConfig(**arch["text"]))
            prefix = "lora_te_" if hasattr(text, "text_model") else "lora_te_text_model_"
            models.append((prefix, text, spec["text_target_modules"]))
    rank, out = spec["rank"], {}
    for prefix, model, targets in models:
        for name, module in model.named_modules():
            if not any(name == t or name.endswith("." + t) for t in targets):
                continue
            if isinstance(module, torch.nn.Linear):
                out[prefix + name.replace(".", "_")] = ((rank, module.in_features), (module.out_features, rank))
            elif isinstance(module, torch.nn.Conv2d):
                out[prefix + name.replace(".", "_")] = (
                    (rank, module.in_channels, *module.kernel_size),
                    (module.out_channels, rank, 1, 1),
                )
    return out


def lora_state_dict(arch: dict, dtype=torch.float16, key: str = "lora") -> dict:
    """A LoRA for the SD 1.5 UNet (and text encoder) in kohya's key format, with diffusers' layer names.

    Per layer of :func:`lora_shapes`: ``<name>.lora_down.weight``, ``<name>.lora_up.weight`` (random,
    seeded) and ``<name>.alpha`` (a scalar, ``arch[key]["alpha"]``; the scale is alpha / rank).

    Args:
        arch (`dict`): from :func:`architecture`.
        dtype (`torch.dtype`, defaults to float16): the tensors' dtype (the real files').
        key (`str`, defaults to ``"lora"``): ``"lora"`` (LCM-LoRA) or ``"style_lora"`` (lesson 07's style LoRA).

    Returns:
        `dict[str, torch.Tensor]`: the file's tensors.
    """
    gen = torch.Generator().manual_seed(SEEDS[key])
    out = {}
    for name, (down, up) in lora_shapes(arch, key).items():
        fan_in = int(torch.tensor(down[1:]).prod())
        out[name + ".lora_down.weight"] = (torch.randn(down, generator=gen) / fan_in**0.5).to(dtype)
        out[name + ".lora_up.weight"] = (torch.randn(up, generator=gen) * 0.01).to(dtype)
        out[name + ".alpha"] = torch.tensor(float(arch[key]["alpha"]), dtype=dtype)
    return out


def random_controlnet(arch: dict, seed: int):
    """A ControlNet for ``arch``'s UNet with random weights, its zero convolutions included (a trained one's are not
    zero): ``ControlNetModel.from_unet`` of a random UNet, then every parameter redrawn.

    Args:
        arch (`dict`): :func:`architecture`'s configs.
        seed (`int`): passed to ``torch.manual_seed``.

    Returns:
        `ControlNetModel`: on the CPU in float32.
    """
    from diffusers import ControlNetModel

    unet = random_unet(arch["unet"], seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=arch["controlnet_embedding"])
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in controlnet.parameters():
            if p.ndim > 1 and not p.abs().sum():  # the zero convolutions: small random weights
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return controlnet
