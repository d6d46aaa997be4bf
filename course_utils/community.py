"""The `community` role: a fine-tuned SD 1.5 as one ``.safetensors`` file, plus an embedding and a LoRA.

* ``sd15``: ``gsdf/Counterfeit-V2.5`` from the Hub (diffusers folders, and the single file
  ``Counterfeit-V2.5_fp16.safetensors`` in the same repository), the "EasyNegative"
  textual-inversion embedding (Hub *dataset* ``gsdf/EasyNegative``) and the LCM LoRA for
  SD 1.5 (``latent-consistency/lcm-lora-sdv1-5``).
* ``tiny``: the course's own, trained by ``python -m training`` and shipped in ``data/tiny``: a
  "community fine-tune" of the tiny text-to-image model that draws *outlined* shapes when the
  prompt says "outline" (``"a red circle in outline style"``), written as ONE ``.safetensors``
  file in the original (CIVITAI) layout and loaded with ``from_single_file``; the same style as an
  A1111-format textual-inversion embedding (key ``emb_params``, like EasyNegative; token
  ``<outline>``) and as a LoRA that outlines every shape.
* ``sd15-random``: the full-size random text-to-image pipeline (speed/memory only); its
  single file, embedding and LoRA are tiny's.

The `sd15` downloads here could not be run where this was written (no network): they follow
the huggingface_hub / diffusers API documentation.
"""
import os
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from . import build
from .device import CourseError
from .single_file import load_single_file

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

# The tiny style (see training/config.py): the fine-tune's trigger word and the embedding's token.
TINY_STYLE_WORD = "outline"
TINY_EMBEDDING_TOKEN = "<outline>"


# --- tiny: the trained community model, embedding and LoRA (data/tiny) ---------------------


def tiny_source() -> Path:
    """The `tiny` community model: ONE ``.safetensors`` file in the original SD layout (``data/tiny/community.safetensors``)."""
    return build.tiny_file("community.safetensors")


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


def tiny_textual_inversion() -> Path:
    """The `tiny` textual-inversion embedding of the outline style, in EasyNegative's file format.

    An A1111 ``.safetensors`` embedding holds one tensor, ``emb_params``, of shape
    ``[n_vectors, hidden_size]``: ``n_vectors`` new "words" that together stand for one token
    (here ``<outline>``, 2 vectors of 64). diffusers' ``load_textual_inversion`` reads a one-key
    file like this (the key's name is ignored when ``token=`` is given).
    """
    return build.tiny_file("outline_embedding.safetensors")


def tiny_lora() -> Path:
    """The `tiny` outline-style LoRA: a folder with ``pytorch_lora_weights.safetensors`` (what ``load_lora_weights`` reads).

    peft's ``LoraConfig`` adds a low-rank pair ``A`` [r, in] / ``B`` [out, r] beside each
    ``to_q``/``to_k``/``to_v``/``to_out.0`` of the UNet; training learned them so that every shape
    is drawn as an outline.
    """
    return build.tiny_file("outline_lora")


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
    """An A1111-format embedding: EasyNegative (`sd15`, Hub dataset ``gsdf/EasyNegative``) or tiny's ``<outline>``."""
    if profile == "sd15":
        return _hub_file(EASYNEGATIVE_REPO, EASYNEGATIVE_FILE, repo_type="dataset")
    return tiny_textual_inversion()


def embedding_token(profile: str) -> str:
    """The token the lesson binds the embedding to: ``"EasyNegative"`` (`sd15`) or ``"<outline>"`` (tiny)."""
    return EASYNEGATIVE_TOKEN if profile == "sd15" else TINY_EMBEDDING_TOKEN


def lora_source(profile: str) -> str:
    """What to pass to ``pipe.load_lora_weights``: the LCM LoRA's Hub id (`sd15`) or tiny's outline LoRA folder."""
    if profile == "sd15":
        local = os.environ.get("COURSE_MODELS_DIR")
        if local and (Path(local) / SD15_LORA_REPO / "pytorch_lora_weights.safetensors").is_file():
            return str(Path(local) / SD15_LORA_REPO)
        return SD15_LORA_REPO
    return str(tiny_lora())


__all__ = [
    "COUNTERFEIT_REPO", "COUNTERFEIT_FILE", "SD15_CONFIG_REPO", "EASYNEGATIVE_REPO", "EASYNEGATIVE_FILE",
    "EASYNEGATIVE_TOKEN", "SD15_LORA_REPO", "TINY_STYLE_WORD", "TINY_EMBEDDING_TOKEN", "tiny_source", "tiny_pipeline", "sd15_random_pipeline",
    "tiny_textual_inversion", "tiny_lora", "checkpoint_file", "checkpoint_config", "embedding_file", "embedding_token", "lora_source",
]
