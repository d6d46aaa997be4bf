"""Each lookalike repository's files (:mod:`.lookalike`), written as the Hub's are: one
``write_<repo>(folder, size, single_files=None)`` per repository, and the helpers they share.

Diffusers folders are ``save_pretrained``'s, plus ``*.fp16.safetensors`` variants, the transformers weights under the
key names the Hub's files use, CLIP's tokenizer files and a ``model_index.json`` trimmed to the Hub's; single files
are in the original (CompVis/LDM) key layout (:mod:`.original_layout`), the embedding in A1111's format, the LoRA
in kohya's. The models come from :mod:`.lookalike_parts`.
"""

import copy
import json
import shutil
import tempfile
import types
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline

from . import builders, configs, hub, original_layout, tiny
from .lookalike_parts import (
    SEEDS,
    architecture,
    lora_state_dict,
    random_controlnet,
    random_unet,
    sd15_pipeline,
    x4_pipeline,
)


# --- what every pipeline folder needs ---------------------------------------------------------------------
def write_tokenizer(folder: Path, pad_token: str | None = None) -> None:
    """CLIP's tokenizer as the Hub repositories store it: ``vocab.json``, ``merges.txt``, ``special_tokens_map.json``,
    ``tokenizer_config.json`` (transformers 5 would save ``tokenizer.json`` instead).

    Args:
        folder (`Path`): the pipeline's ``tokenizer`` folder (replaced if it exists).
        pad_token (`str`, *optional*): another padding token (SD 2's is ``"!"``); default CLIP's.
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tiny.TOKENIZER_DIR / name, folder / name)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        data = json.loads((tiny.TOKENIZER_DIR / name).read_text())
        if pad_token:
            data["pad_token"] = pad_token
        (folder / name).write_text(json.dumps(data, indent=2) + "\n")


def write_pipeline(
    pipe, folder: Path, variants: tuple = ("fp16",), diffusers_version: str | None = None, pad_token: str | None = None
) -> None:
    """``save_pretrained`` in float32, plus each variant's weight files (``*.fp16.safetensors``) beside them.

    ``model_index.json`` is trimmed to what the Hub's file holds (the classes; no empty ``[null, null]``
    components, no ``requires_safety_checker``), with the real ``_diffusers_version`` where it is known.

    Args:
        pipe (`DiffusionPipeline`): in float32.
        folder (`Path`): the repository's working tree.
        variants (`tuple[str]`, defaults to ``("fp16",)``): half-precision variants to write beside.
        diffusers_version (`str`, *optional*): the real ``model_index.json``'s ``_diffusers_version``.
        pad_token (`str`, *optional*): for :func:`write_tokenizer`.
    """
    pipe.save_pretrained(folder, safe_serialization=True)
    for variant in variants:
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            half = copy.deepcopy(pipe)
            for part in half.components.values():
                if isinstance(part, torch.nn.Module):
                    part.half()  # (pipe.to(dtype) logs a note per model about modules kept in fp32: there are none)
            half.save_pretrained(tmp, safe_serialization=True, variant=variant)
            for f in Path(tmp).glob(f"*/*.{variant}.safetensors"):
                shutil.copyfile(f, folder / f.parent.name / f.name)
    index = json.loads((folder / "model_index.json").read_text())
    index = {k: v for k, v in index.items() if v != [None, None] and k != "requires_safety_checker"}
    # without torchvision transformers makes a CLIPImageProcessorPil; the Hub names the class
    if "feature_extractor" in index:
        index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    if diffusers_version:
        index["_diffusers_version"] = diffusers_version
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    write_tokenizer(folder / "tokenizer", pad_token)
    legacy_transformers_keys(folder)


def legacy_transformers_keys(folder: Path) -> None:
    """Give the transformers weights the names the Hub's files use (transformers 4.2x saved them).

    transformers >= 5.6 saves ``CLIPTextModel`` as ``embeddings.*``/``encoder.*`` and the safety checker's
    CLIP vision tower as ``vision_model.embeddings.*``; the Hub's files say ``text_model.embeddings.*`` and
    ``vision_model.vision_model.embeddings.*``, and still hold the ``position_ids`` buffer (int64
    ``[1, positions]``) that transformers 4.2x saved (the x4 upscaler's ``text_encoder/model.fp16.safetensors``
    is 680,821,096 bytes only with it). transformers 5 reads both forms.

    Args:
        folder (`Path`): a pipeline folder; its ``text_encoder`` and ``safety_checker`` files are rewritten in place.
    """
    from safetensors.torch import load_file, save_file

    for pattern, old, new in (
        ("text_encoder/model*.safetensors", "", "text_model."),
        ("safety_checker/model*.safetensors", "vision_model.", "vision_model.vision_model."),
    ):
        for f in folder.glob(pattern):
            state = load_file(str(f))
            renamed = {
                (new + k[len(old) :] if k.startswith(old) and not k.startswith(new) else k): v for k, v in state.items()
            }
            position = next(k for k in renamed if k.endswith("embeddings.position_embedding.weight"))
            renamed[position.replace("position_embedding.weight", "position_ids")] = torch.arange(
                renamed[position].shape[0]
            )[None]
            save_file(renamed, str(f), metadata={"format": "pt"})


def write_single_file(pipe, path: Path, single_files=None, **kwargs) -> None:
    """``original_layout.save_single_file(pipe, path, **kwargs)``, unless ``single_files`` leaves ``path`` out.

    Args:
        pipe: what :func:`.original_layout.save_single_file` writes.
        path (`Path`): the file.
        single_files (`Container[str]`, *optional*): the names of the single files to write; default all. A folder
            that needs only some (``tools/gpu_models.py``: what ``download sd15`` fetches) skips writing the
            others: gigabytes at full size.
    """
    if single_files is None or path.name in single_files:
        original_layout.save_single_file(pipe, path, **kwargs)


# --- one writer per repository ---------------------------------------------------------------------
def write_sd15(folder: Path, size: str, single_files=None) -> None:
    """stable-diffusion-v1-5/stable-diffusion-v1-5: diffusers folders (+ fp16 and non-EMA UNet variants), two single files.

    Args:
        folder (`Path`): the repository's working tree (an empty folder).
        size (`str`): ``"small"`` or ``"full"`` (``lookalike_parts.architecture``).
        single_files (`Container[str]`, *optional*): the names of the top-level single files to write (default all;
            see :func:`write_single_file`).
    """
    arch = architecture(size)
    pipe = sd15_pipeline(arch, SEEDS["sd15"])  # its UNet holds the EMA weights, as the repository's default unet does
    non_ema = random_unet(arch["unet"], SEEDS["non_ema"])
    schedule = original_layout.schedule_buffers(
        configs.SD15_SCHEDULER["beta_start"],
        configs.SD15_SCHEDULER["beta_end"],
        configs.SD15_SCHEDULER["num_train_timesteps"],
    )
    write_single_file(pipe, folder / "v1-5-pruned-emaonly.safetensors", single_files, extra=schedule)
    ema = original_layout.ema_state_dict(original_layout.to_original_state_dict(pipe))
    ema.update({"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(0, dtype=torch.int32)})
    both = types.SimpleNamespace(unet=non_ema, vae=pipe.vae, text_encoder=pipe.text_encoder)  # non-EMA + EMA weights
    write_single_file(both, folder / "v1-5-pruned.safetensors", single_files, extra={**schedule, **ema})
    write_pipeline(pipe, folder, diffusers_version="0.6.0")
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        non_ema.save_pretrained(tmp, safe_serialization=True, variant="non_ema")
        shutil.copyfile(
            Path(tmp) / "diffusion_pytorch_model.non_ema.safetensors",
            folder / "unet" / "diffusion_pytorch_model.non_ema.safetensors",
        )


def write_inpainting(folder: Path, size: str, single_files=None) -> None:
    """stable-diffusion-v1-5/stable-diffusion-inpainting: the 9-channel UNet, DDIM, fp16 variants; no single .safetensors.

    Args:
        folder (`Path`): the repository's working tree (an empty folder).
        size (`str`): ``"small"`` or ``"full"`` (``lookalike_parts.architecture``).
        single_files (`Container[str]`, *optional*): the names of the top-level single files to write (default all;
            see :func:`write_single_file`).
    """
    arch = architecture(size)
    pipe = sd15_pipeline(arch, SEEDS["sd15"], arch["inpaint_unet"], cls=StableDiffusionInpaintPipeline)
    pipe.scheduler = DDIMScheduler.from_config(configs.SD15_SCHEDULER)  # the repository's scheduler is DDIM
    write_pipeline(pipe, folder)


def write_upscaler(folder: Path, size: str, single_files=None) -> None:
    """stabilityai/stable-diffusion-x4-upscaler: the diffusers folders (+ fp16) and ``x4-upscaler-ema.safetensors``.

    Args:
        folder (`Path`): the repository's working tree (an empty folder).
        size (`str`): ``"small"`` or ``"full"`` (``lookalike_parts.architecture``).
        single_files (`Container[str]`, *optional*): the names of the top-level single files to write (default all;
            see :func:`write_single_file`).
    """
    arch = architecture(size)
    pipe, whole_text_model = x4_pipeline(arch)
    width = whole_text_model.config.hidden_size
    torch.manual_seed(SEEDS["upscaler"] + 1)
    extra = {
        **original_layout.open_clip_state_dict(whole_text_model),  # all blocks, the last one unused by diffusers
        original_layout.OPEN_CLIP_PREFIX + "text_projection": torch.randn(width, width) * width**-0.5,
        original_layout.OPEN_CLIP_PREFIX + "logit_scale": torch.tensor(4.6052),  # ln(100), CLIP's value
        **original_layout.schedule_buffers(
            configs.X4_UPSCALER_SCHEDULER["beta_start"],
            configs.X4_UPSCALER_SCHEDULER["beta_end"],
            configs.X4_UPSCALER_SCHEDULER["num_train_timesteps"],
        ),
        **original_layout.schedule_buffers(
            configs.X4_UPSCALER_LOW_RES_SCHEDULER["beta_start"],
            configs.X4_UPSCALER_LOW_RES_SCHEDULER["beta_end"],
            configs.X4_UPSCALER_LOW_RES_SCHEDULER["num_train_timesteps"],
            prefix="low_scale_model.",
            posterior=False,
        ),
    }
    write_single_file(
        pipe, folder / "x4-upscaler-ema.safetensors", single_files, extra=extra, text_encoder_layout="open_clip"
    )
    write_pipeline(pipe, folder, diffusers_version="0.9.0.dev0", pad_token="!")


def write_counterfeit(folder: Path, size: str, single_files=None) -> None:
    """gsdf/Counterfeit-V2.5: diffusers folders (no fp16 variants, no safety checker) and four single .safetensors files.

    The real repository's folders are scheduler, text_encoder, tokenizer, unet and vae (and sample images): no
    ``safety_checker`` or ``feature_extractor`` (docs/lookalike-repos.md), so ``model_index.json`` names neither.

    Args:
        folder (`Path`): the repository's working tree (an empty folder).
        size (`str`): ``"small"`` or ``"full"`` (``lookalike_parts.architecture``).
        single_files (`Container[str]`, *optional*): the names of the top-level single files to write (default all;
            see :func:`write_single_file`).
    """
    arch = architecture(size)
    parts = builders.random_text2img_components(arch["text"], arch["unet"], arch["vae"], seed=SEEDS["counterfeit"])
    parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = StableDiffusionPipeline(**parts)
    write_single_file(pipe, folder / "Counterfeit-V2.5.safetensors", single_files)
    write_single_file(pipe, folder / "Counterfeit-V2.5_pruned.safetensors", single_files)
    write_single_file(pipe, folder / hub.COUNTERFEIT_FILE, single_files, dtype=torch.float16)
    v22 = builders.random_text2img_components(arch["text"], arch["unet"], arch["vae"], seed=SEEDS["counterfeit_v22"])
    write_single_file(types.SimpleNamespace(**v22), folder / "Counterfeit-V2.2.safetensors", single_files)
    write_pipeline(pipe, folder, variants=())


def write_easynegative(folder: Path, size: str, single_files=None) -> None:
    """gsdf/EasyNegative (a dataset): ``EasyNegative.safetensors``, A1111's format: one tensor ``emb_params``.

    Args:
        folder (`Path`): the repository's working tree (an empty folder).
        size (`str`): ``"small"`` or ``"full"`` (``lookalike_parts.architecture``).
        single_files (`Container[str]`, *optional*): the names of the top-level single files to write (default all;
            see :func:`write_single_file`).
    """
    from safetensors.torch import save_file

    if single_files is not None and hub.EASYNEGATIVE_FILE not in single_files:
        return
    hidden = architecture(size)["text"]["hidden_size"]
    gen = torch.Generator().manual_seed(SEEDS["embedding"])
    vectors = torch.randn(configs.EASYNEGATIVE_VECTORS, hidden, generator=gen) * 0.02  # CLIP's token embeddings' scale
    save_file({"emb_params": vectors.contiguous()}, str(folder / hub.EASYNEGATIVE_FILE))


def write_lora(filename: str, key: str, folder: Path, size: str, single_files=None) -> None:
    """A LoRA repository: its one file of fp16 tensors in kohya's key format (``lookalike_parts.lora_state_dict``).

    latent-consistency/lcm-lora-sdv1-5: ``pytorch_lora_weights.safetensors``, UNet only;
    sayakpaul/civitai-light-shadow-lora: ``light_and_shadow.safetensors``, UNet and text encoder. ``lookalike.py``
    binds the first two arguments with ``functools.partial``.

    Args:
        filename (`str`): the file's name, e.g. ``hub.LCM_LORA_FILE``.
        key (`str`): its layers' spec in ``lookalike_parts.architecture``: ``"lora"`` or ``"style_lora"``.
        folder (`Path`): the repository's working tree (an empty folder).
        size (`str`): ``"small"`` or ``"full"`` (``lookalike_parts.architecture``).
        single_files (`Container[str]`, *optional*): the names of the top-level single files to write (default all;
            see :func:`write_single_file`).
    """
    from safetensors.torch import save_file

    if single_files is not None and filename not in single_files:
        return
    save_file(lora_state_dict(architecture(size), key=key), str(folder / filename), metadata={"format": "pt"})


def write_controlnet(folder: Path, size: str, single_files=None) -> None:
    """lllyasviel/control_v11p_sd15_canny: a model repository, ``config.json`` and the weights at its top level,
    float32 (``diffusion_pytorch_model.safetensors``) and an fp16 variant (``diffusion_pytorch_model.fp16.safetensors``).

    Args:
        folder (`Path`): the repository's working tree (an empty folder).
        size (`str`): ``"small"`` or ``"full"`` (``lookalike_parts.architecture``).
        single_files (`Container[str]`, *optional*): the weights files to write (default both; ``download sd15`` fetches
            only the fp16 one, ``hub.SINGLE_FILES``); ``config.json`` is always written.
    """
    controlnet = random_controlnet(architecture(size), SEEDS["controlnet"])
    if single_files is None or hub.CONTROLNET_FILES[None] in single_files:
        controlnet.save_pretrained(folder, safe_serialization=True)
    controlnet.half().save_pretrained(folder, safe_serialization=True, variant="fp16")
