"""The `community` role: a fine-tuned SD 1.5 as one ``.safetensors`` file, plus an embedding and a LoRA.

* ``sd15``: ``gsdf/Counterfeit-V2.5`` from the Hub (diffusers folders, and the single file
  ``Counterfeit-V2.5_fp16.safetensors`` in the same repository), the "EasyNegative"
  textual-inversion embedding (Hub *dataset* ``gsdf/EasyNegative``) and the LCM LoRA for
  SD 1.5 (``latent-consistency/lcm-lora-sdv1-5``).
* ``tiny``: the course's own stand-ins, made offline with fixed seeds and cached in
  ``build.cache_dir()``: a "community fine-tune" of the tiny text-to-image model (its UNet
  weights nudged by seeded noise) written as ONE ``.safetensors`` file in the original
  (CIVITAI) layout and loaded with ``from_single_file``; an A1111-style embedding file
  (key ``emb_params``, like EasyNegative) and a LoRA for the tiny UNet.
* ``sd15-random``: the full-size random text-to-image pipeline (speed/memory only); its
  single file, embedding and LoRA are tiny's.

The `sd15` downloads here could not be run where this was written (no network): they follow
the huggingface_hub / diffusers API documentation.
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from . import build, configs
from .device import CourseError
from .single_file import load_single_file, save_single_file

# The Hub sources of the `sd15` profile.
COUNTERFEIT_REPO = "gsdf/Counterfeit-V2.5"  # diffusers folders AND single files in one repo
COUNTERFEIT_FILE = "Counterfeit-V2.5_fp16.safetensors"  # ~2.1 GB, original (LDM) layout
SD15_CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # configs for from_single_file
EASYNEGATIVE_REPO = "gsdf/EasyNegative"  # a Hub *dataset* repository, not a model repository
EASYNEGATIVE_FILE = "EasyNegative.safetensors"
EASYNEGATIVE_TOKEN = "EasyNegative"
# LCM-LoRA for SD 1.5 (diffusers format, pytorch_lora_weights.safetensors): turns SD 1.5 and
# its fine-tunes into a 4-step model when used with LCMScheduler and guidance_scale about 1.
SD15_LORA_REPO = "latent-consistency/lcm-lora-sdv1-5"

# How the tiny stand-ins are made (part of their cache names: change a value, get a new file).
TINY_FINETUNE = dict(seed=7, noise=0.02, version=1)
TINY_EMBEDDING = dict(seed=11, n_vectors=8, std=0.02, version=1)
TINY_LORA = dict(seed=13, rank=4, std=0.1, target_modules=("to_q", "to_k", "to_v", "to_out.0"), version=1)


def _cache_file(name: str, spec: dict, suffix: str) -> Path:
    """A cache path named by ``name`` and the hash of ``spec`` (like ``build.cached_build``)."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return build.cache_dir() / f"{name}-{digest}{suffix}"


def _write_atomically(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename to ``path``, so a half-written file is never seen."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# --- tiny: the "community fine-tune" as a single file --------------------------------------


def _tiny_finetune() -> StableDiffusionPipeline:
    """The tiny text-to-image pipeline with every UNet weight nudged by seeded noise (a stand-in fine-tune)."""
    pipe = StableDiffusionPipeline.from_pretrained(build.tiny_text2img_folder())
    generator = torch.Generator().manual_seed(TINY_FINETUNE["seed"])
    with torch.no_grad():
        for param in pipe.unet.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * TINY_FINETUNE["noise"])
    return pipe


def tiny_source() -> Path:
    """The `tiny` community model: ONE ``.safetensors`` file in the original SD layout (built on first use)."""
    base = build.tiny_text2img_folder()
    path = _cache_file("tiny-community", dict(TINY_FINETUNE, base=base.name), ".safetensors")
    return _write_atomically(path, lambda tmp: save_single_file(_tiny_finetune(), tmp, metadata={"made_by": "sd-course"}))


def tiny_pipeline(cls=StableDiffusionPipeline, dtype: torch.dtype = torch.float32):
    """The `tiny` community model, loaded from its single file with ``from_single_file`` (offline).

    Args:
        cls (`type`): the pipeline class (``StableDiffusionPipeline``).
        dtype (`torch.dtype`): weights dtype.
    """
    return load_single_file(tiny_source(), config=build.tiny_text2img_folder(), pipeline_class=cls, dtype=dtype)


def sd15_random_pipeline(cls=StableDiffusionPipeline, dtype: torch.dtype = torch.float32):
    """SD 1.5's full-size text-to-image architecture with random weights (speed/memory only)."""
    return build.sd15_random_pipeline(cls, dtype)


# --- tiny: an A1111-style textual-inversion embedding and a LoRA ---------------------------


def tiny_textual_inversion() -> Path:
    """A textual-inversion embedding for the tiny text encoder, in EasyNegative's file format.

    An A1111 ``.safetensors`` embedding holds one tensor, ``emb_params``, of shape
    ``[n_vectors, hidden_size]``: ``n_vectors`` new "words" that together stand for one token.
    diffusers' ``load_textual_inversion`` reads a one-key file like this (the key's name is ignored
    when ``token=`` is given). Seeded random vectors, scaled like the tiny token embeddings.
    """
    from safetensors.torch import save_file

    hidden = configs.TINY_TEXT_ENCODER["hidden_size"]
    spec = dict(TINY_EMBEDDING, hidden=hidden)

    def write(tmp):
        generator = torch.Generator().manual_seed(spec["seed"])
        vectors = torch.randn(spec["n_vectors"], hidden, generator=generator) * spec["std"]
        save_file({"emb_params": vectors}, str(tmp), metadata={"format": "pt", "made_by": "sd-course"})

    return _write_atomically(_cache_file("tiny-easynegative", spec, ".safetensors"), write)


def tiny_lora() -> Path:
    """A LoRA for the tiny UNet's attention projections, saved with ``save_lora_weights``.

    peft's ``LoraConfig`` adds a low-rank pair ``A`` [r, in] / ``B`` [out, r] beside each
    ``to_q``/``to_k``/``to_v``/``to_out.0``; a trained LoRA has learned them, here they are seeded
    random numbers (``B`` would be zeros straight after initialisation: no effect at all).

    Returns:
        `Path`: a folder holding ``pytorch_lora_weights.safetensors`` (what ``load_lora_weights`` looks for).
    """
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    base = build.tiny_text2img_folder()
    spec = dict(TINY_LORA, base=base.name)
    folder = _cache_file("tiny-lora", spec, "")
    weights = folder / "pytorch_lora_weights.safetensors"
    if weights.exists():
        return folder
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    unet.add_adapter(
        LoraConfig(r=spec["rank"], lora_alpha=spec["rank"], target_modules=list(spec["target_modules"]), init_lora_weights="gaussian")
    )
    generator = torch.Generator().manual_seed(spec["seed"])
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * spec["std"])
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=build.cache_dir()))
    try:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# --- per profile: where the lesson's files come from ----------------------------------------


def _hub_file(repo_id: str, filename: str, repo_type: str = "model") -> Path:
    """Download (or find in the cache) one file of a Hub repository; a clear error when unreachable."""
    from huggingface_hub import hf_hub_download

    from .registry import unreachable_message

    local = os.environ.get("COURSE_MODELS_DIR")
    if local and (Path(local) / repo_id / filename).is_file():
        return Path(local) / repo_id / filename
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type))
    except Exception as err:  # offline, DNS failure, proxy, ...
        raise CourseError(unreachable_message(repo_id, err)) from None


def checkpoint_file(profile: str) -> Path:
    """A single-file checkpoint (original layout, ``.safetensors``) for ``profile``.

    `sd15`: ``Counterfeit-V2.5_fp16.safetensors`` from ``gsdf/Counterfeit-V2.5`` (about 2.1 GB; not run here).
    Otherwise: the `tiny` community file (:func:`tiny_source`).
    """
    if profile == "sd15":
        return _hub_file(COUNTERFEIT_REPO, COUNTERFEIT_FILE)
    return tiny_source()


def checkpoint_config(profile: str) -> str:
    """The diffusers configs ``from_single_file`` builds the pipeline from (the file holds only weights).

    `sd15`: SD 1.5's repository (a local folder or cache snapshot when there is one, else the Hub id:
    only its small config files are fetched). Otherwise: the `tiny` text-to-image folder.
    """
    if profile == "sd15":
        from .registry import resolve_model

        return resolve_model(SD15_CONFIG_REPO)
    return str(build.tiny_text2img_folder())


def embedding_file(profile: str) -> Path:
    """An EasyNegative-format embedding: the real one (`sd15`, Hub dataset ``gsdf/EasyNegative``) or tiny's."""
    if profile == "sd15":
        return _hub_file(EASYNEGATIVE_REPO, EASYNEGATIVE_FILE, repo_type="dataset")
    return tiny_textual_inversion()


def lora_source(profile: str) -> str:
    """What to pass to ``pipe.load_lora_weights``: the LCM LoRA's Hub id (`sd15`) or tiny's folder."""
    if profile == "sd15":
        local = os.environ.get("COURSE_MODELS_DIR")
        if local and (Path(local) / SD15_LORA_REPO / "pytorch_lora_weights.safetensors").is_file():
            return str(Path(local) / SD15_LORA_REPO)
        return SD15_LORA_REPO
    return str(tiny_lora())


__all__ = [
    "COUNTERFEIT_REPO", "COUNTERFEIT_FILE", "SD15_CONFIG_REPO", "EASYNEGATIVE_REPO", "EASYNEGATIVE_FILE",
    "EASYNEGATIVE_TOKEN", "SD15_LORA_REPO", "tiny_source", "tiny_pipeline", "sd15_random_pipeline",
    "tiny_textual_inversion", "tiny_lora", "checkpoint_file", "checkpoint_config", "embedding_file", "lora_source",
]
