"""Where the `tiny` profile's weights come from: ``data/tiny``, shipped with the repository.

The `tiny` models were trained by this repository (``python -m training``; model card:
``data/tiny/README.md``). ``data/tiny/text2img`` is a complete diffusers folder; the inpainting
and upscaling pipelines share its text encoder, tokenizer and VAE, so only their own parts are
stored (``inpaint/unet``, ``upscale/unet``, ``upscale/vae``) and the builders assemble each
pipeline once into a cache folder (:func:`cached_build`), loaded back with ``from_pretrained``.
The tokenizer is CLIP's real one, in ``data/clip_tokenizer``.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import CourseError
from ..paths import DATA_DIR

TOKENIZER_DIR = DATA_DIR / "clip_tokenizer"  # CLIP's tokenizer files (SD 1.5's), see tools/make_tokenizer.py
TINY_DIR = DATA_DIR / "tiny"  # the trained tiny models (see data/tiny/README.md)

# What the tiny style models were trained on (training/ reads these too): the community fine-tune
# draws outlined shapes when the prompt starts with STYLE_WORD ("outline style, a red circle");
# the textual-inversion embedding, trained for that model, is bound to EMBEDDING_TOKEN
# ("<outline>, a red circle"); the LoRA needs no word.
STYLE_WORD = "outline"
EMBEDDING_TOKEN = "<outline>"
OTHER_WORD = (
    "watercolor"  # a word the fine-tune never saw, in its pattern ("watercolor style, ..."): evaluate, training
)


def style_prompt(prompt: str, word: str = STYLE_WORD) -> str:
    """The fine-tune's prompt format, the one place it is written: ``"<word> style, <prompt>"``.

    ``"outline style, a red circle"``; ``"outline style"`` for an empty prompt; ``prompt`` itself for an empty
    word (the LoRA needs none). The word comes first: CLIP's text encoder is causal (``community.style_prompt``).
    """
    if not word:
        return prompt
    return f"{word} style, {prompt}" if prompt else f"{word} style"


def embedding_prompt(prompt: str, token: str = EMBEDDING_TOKEN) -> str:
    """The embedding's prompt format: its token(s) alone in front, ``"<outline>, a red circle"`` (``token`` for an
    empty prompt). Not the fine-tune's "<word> style, " pattern, which the community model answers whatever the word."""
    return f"{token}, {prompt}" if prompt else token


def cache_dir() -> Path:
    """Folder where assembled `tiny` pipelines are stored (``COURSE_CACHE``, default ``~/.cache/sd-course``)."""
    return Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "sd-course"))


def tiny_file(*parts: str) -> Path:
    """A file or folder of the trained `tiny` models, e.g. ``tiny_file("text2img")``.

    Raises:
        CourseError: when it is missing, saying how to get it back.
    """
    path = TINY_DIR.joinpath(*parts)
    if not DATA_DIR.exists():
        raise CourseError(
            f"The course's data folder {DATA_DIR} does not exist: course_utils was installed without its repository "
            "(e.g. from a wheel). Clone the repository and set COURSE_DATA=/path/to/clone/data, or install the course "
            "from the clone with `pip install -e .`."
        )
    if not path.exists():
        raise CourseError(
            f"{path} is missing. The trained tiny models ship with the repository in {TINY_DIR}: "
            "clone it again (or `git checkout -- data/tiny`), or retrain them with `python -m training all` "
            "and `python -m training export --out training/runs --to data/tiny`."
        )
    return path


def text2img_folder() -> Path:
    """The trained `tiny` text-to-image model: a diffusers folder, ``data/tiny/text2img`` (~8 M parameters)."""
    tiny_file("text2img", "model_index.json")
    return tiny_file("text2img")


def community_file() -> Path:
    """The `tiny` community model: ONE ``.safetensors`` file in the original SD layout (``data/tiny/community.safetensors``)."""
    return tiny_file("community.safetensors")


def embedding_file() -> Path:
    """The `tiny` textual-inversion embedding of the outline style, in EasyNegative's (A1111) file format.

    One tensor, ``emb_params``, of shape ``[n_vectors, hidden_size]`` (here 2 x 64): ``n_vectors``
    new "words" that together stand for one token, :data:`EMBEDDING_TOKEN`.
    """
    return tiny_file("outline_embedding.safetensors")


def lora_folder() -> Path:
    """The `tiny` outline-style LoRA: a folder with ``pytorch_lora_weights.safetensors`` (what ``load_lora_weights`` reads).

    peft's ``LoraConfig`` added a low-rank pair ``A`` [r, in] / ``B`` [out, r] beside each
    ``to_q``/``to_k``/``to_v``/``to_out.0`` of the UNet and each ResNet block's ``conv1``/``conv2``
    (for a convolution, ``A`` is an [r, in, 3, 3] convolution and ``B`` an [out, r, 1, 1] one);
    training learned them so that every shape is drawn as an outline.
    """
    return tiny_file("outline_lora")


def controlnet_folder() -> Path:
    """The `tiny` canny ControlNet: a diffusers folder, ``data/tiny/controlnet`` (``ControlNetModel.from_pretrained``).

    Made by ``ControlNetModel.from_unet`` from the text-to-image UNet and trained on Canny edge maps of the shapes
    world (``python -m training controlnet``); its condition is ``course_utils.edges.canny`` of a 64x64 picture.
    """
    return tiny_file("controlnet")


def digest(*paths: Path) -> str:
    """A short hash of the files' bytes (folders: every file in them): names cache folders built from them."""
    h = hashlib.sha256()
    for path in paths:
        for f in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:10]


def cached_build(name: str, spec: dict, builder) -> Path:
    """Return the folder of a saved pipeline, building it first if it is not in the cache.

    Args:
        name (`str`): a short name, e.g. ``"tiny-inpaint"``.
        spec (`dict`): everything the build depends on; its hash names the folder, so changed
            weights or configs build a new folder instead of reusing a stale one.
        builder (`Callable[[], DiffusionPipeline]`): makes the pipeline to save.

    Returns:
        `Path`: a folder that ``from_pretrained`` can load.
    """
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    folder = cache_dir() / f"{name}-{key}"
    if (folder / "model_index.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        builder().save_pretrained(tmp)
        try:
            tmp.rename(folder)  # atomic: a half-written model is never seen
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
