"""Files the lessons load one by one, per profile: lesson 07's checkpoint, its configs, an embedding, a LoRA; lesson
11's SD 1.5 ControlNet (:func:`controlnet_source`).

* `sd15`: Counterfeit-V2.5's single file, SD 1.5's configs, the EasyNegative embedding (a Hub
  *dataset*) and the LCM LoRA for SD 1.5 - all from :mod:`course_utils.models.hub`.
* `tiny` (and `sd15-random`, whose own files would be noise): the course's trained outline-style
  models in ``data/tiny`` (:mod:`course_utils.models.tiny`).

The `sd15` downloads could not be run where this was written (no network): they follow the
huggingface_hub / diffusers API documentation.
"""

from pathlib import Path

from ..errors import CourseError
from . import hub, tiny

EASYNEGATIVE_TOKEN = "EasyNegative"  # the word EasyNegative is used as in prompts


def checkpoint_file(profile: str) -> Path:
    """A single-file checkpoint (original layout, ``.safetensors``) for ``profile``.

    `sd15`: ``Counterfeit-V2.5_fp16.safetensors`` from ``gsdf/Counterfeit-V2.5`` (about 2.1 GB).
    Otherwise: the `tiny` community file, ``data/tiny/community.safetensors``.
    """
    if profile == "sd15":
        return hub.hub_file(hub.COUNTERFEIT_REPO, hub.COUNTERFEIT_FILE)
    return tiny.community_file()


def checkpoint_config(profile: str) -> str:
    """The diffusers configs ``from_single_file`` builds the pipeline from (the file holds only weights).

    `sd15`: SD 1.5's repository (a local folder or cache snapshot when there is one, else the Hub id:
    only its small config files are fetched). Otherwise: the `tiny` text-to-image folder.
    """
    if profile == "sd15":
        return hub.resolve_model(hub.SD15_CONFIG_REPO)
    return str(tiny.text2img_folder())


def embedding_file(profile: str) -> Path:
    """An A1111-format embedding: EasyNegative (`sd15`, Hub dataset ``gsdf/EasyNegative``) or tiny's ``<outline>``."""
    if profile == "sd15":
        return hub.hub_file(hub.EASYNEGATIVE_REPO, hub.EASYNEGATIVE_FILE, repo_type="dataset")
    return tiny.embedding_file()


def embedding_token(profile: str) -> str:
    """The token the lesson binds the embedding to: ``"EasyNegative"`` (`sd15`) or ``"<outline>"`` (tiny)."""
    return EASYNEGATIVE_TOKEN if profile == "sd15" else tiny.EMBEDDING_TOKEN


def lora_source(profile: str) -> str:
    """What to pass to ``pipe.load_lora_weights`` in lesson 07: a style LoRA's folder.

    `sd15`: "Light and Shadow" for Counterfeit-V2.5 (:data:`~course_utils.models.hub.STYLE_LORA_REPO`, fetched with
    :func:`~course_utils.models.hub.hub_file`); `tiny`: its outline LoRA.
    """
    if profile == "sd15":
        return hub.lora_source(hub.STYLE_LORA_REPO, hub.STYLE_LORA_FILE)
    return str(tiny.lora_folder())


def controlnet_source(variant: str | None = None) -> tuple[str, str | None]:
    """Where ``ControlNetModel.from_pretrained`` loads lesson 11's SD 1.5 ControlNet from, and the variant to ask for.

    Fetches ``config.json`` and one weights file (:data:`~course_utils.models.hub.CONTROLNET_FILES`) with :func:`~course_utils.models.hub.hub_file`
    (``COURSE_MODELS_DIR``, the cache, or the Hub): the ``variant`` wanted first, the other if that one cannot be had
    (e.g. only the fp16 file was downloaded, and this run is float32 on a CPU: it is upcast).

    Args:
        variant (`str`, *optional*): ``"fp16"`` for a float16 run, else `None`.

    Returns:
        `tuple[str, str | None]`: ``(folder, variant)`` for ``from_pretrained(folder, variant=variant)``.

    Raises:
        RepoMissing / CourseError: as :func:`~course_utils.models.hub.hub_file`, for the last file tried.
    """
    config = hub.hub_file(hub.CONTROLNET_REPO, "config.json")
    last = None
    for v in (variant, "fp16" if variant is None else None):
        try:
            weights_file = hub.hub_file(hub.CONTROLNET_REPO, hub.CONTROLNET_FILES[v])
        except CourseError as err:
            last = err
            continue
        if weights_file.parent != config.parent:  # e.g. the config in COURSE_MODELS_DIR, the weights in the cache
            raise CourseError(
                f"The ControlNet's config.json ({config.parent}) and its weights ({weights_file.parent}) are in two "
                f"places: put both files in one folder, e.g. `python -m course_utils download sd15 --role controlnet "
                f"--to <folder>` and COURSE_MODELS_DIR=<folder>."
            )
        return str(weights_file.parent), v
    raise last
