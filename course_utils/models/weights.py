"""Which weight files a diffusers pipeline folder holds, and which to download: the course's one reading of them.

A pipeline repository has one folder per component (``unet/``, ``vae/``, ``text_encoder/`` ...), and in each
its weights as ``<name>[.<variant>][-00001-of-0000N].<safetensors|bin>``. Repositories differ: SD 1.5's has an
fp16 variant of every component, Counterfeit-V2.5's none; an early-2023 conversion wrote only pickled ``.bin``
files. :func:`download_plan` picks from a repository's file list (the Hub's ``siblings``), :func:`folder_complete`
checks a folder on disk the same way (the Hub cache, ``COURSE_MODELS_DIR``), and :func:`folder_variant` says which
variant to load from a folder. :mod:`course_utils.models.hub` uses them to download and to find.
"""

import json
import re
from pathlib import Path

# A component's weight file: <name>[.<variant>][-00001-of-00002].<safetensors|bin>, e.g. "model.fp16.safetensors",
# "diffusion_pytorch_model.bin", "diffusion_pytorch_model-00001-of-00002.safetensors".
WEIGHT_FILE = re.compile(
    r"^(?P<name>[^./]+)(?:\.(?P<variant>[A-Za-z0-9_]+))?(?:-\d+-of-\d+)?\.(?P<format>safetensors|bin)$"
)
FORMATS = ("safetensors", "bin")  # preferred first: safetensors cannot run code when loaded, pickles can


def weight_files(filenames) -> dict[str, dict[tuple[str | None, str], list[str]]]:
    """Group a repository's component weight files: ``{component: {(variant, format): [files]}}``.

    Args:
        filenames (iterable of `str`): paths inside the repository, e.g. ``"unet/diffusion_pytorch_model.bin"``.
            Top-level files (single-file checkpoints) and deeper ones are left out.

    Returns:
        `dict`: e.g. ``{"unet": {(None, "bin"): ["unet/diffusion_pytorch_model.bin"], ("fp16", "safetensors"): [...]}}``.
    """
    out: dict = {}
    for path in filenames:
        parts = str(path).split("/")
        match = WEIGHT_FILE.match(parts[-1]) if len(parts) == 2 else None
        if match:
            out.setdefault(parts[0], {}).setdefault((match["variant"], match["format"]), []).append(str(path))
    return out


def download_plan(filenames, variant: str | None = None) -> tuple[list[str], str | None]:
    """The files to download for a pipeline from a repository's file list, and the variant they are.

    Args:
        filenames (iterable of `str`): every file of the repository (``HfApi().model_info(...).siblings``).
        variant (`str`, *optional*): the weights wanted (``"fp16"`` for a float16 run). Taken only where
            every component with weights has it (so one ``variant=`` loads the folder), else the default weights.

    Returns:
        `tuple[list[str], str | None]`: the configs and tokenizer files (``.json``, ``.txt``, ``.model``) plus, per
        component, its weight files in the chosen variant, safetensors where it has them, else ``.bin``; and the
        variant chosen (`None`: the default weights). Never the top-level single-file checkpoints, never another
        variant (e.g. SD 1.5's ``non_ema`` training copy).
    """
    filenames = [str(f) for f in filenames]
    groups = weight_files(filenames)
    if not (variant and groups and all(any(v == variant for v, _ in g) for g in groups.values())):
        variant = None
    files = [f for f in filenames if f.endswith((".json", ".txt", ".model"))]
    for group in groups.values():
        files += next((group[(variant, fmt)] for fmt in FORMATS if (variant, fmt) in group), [])
    return files, variant


def folder_complete(folder, variant: str | None = None) -> bool:
    """``folder`` holds a whole pipeline in ``variant``: every component ``model_index.json`` names is there,
    and each with a ``config.json`` (a model, not a scheduler or tokenizer) has weight files of ``variant``
    (safetensors or ``.bin``; every shard a ``*.index.json`` lists)."""
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    names = [k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[1] is not None]
    groups = weight_files(p.relative_to(folder).as_posix() for p in folder.glob("*/*"))
    for name in names:
        if not (folder / name).is_dir():
            return False
        if (folder / name / "config.json").exists():
            found = [files for (v, _), files in groups.get(name, {}).items() if v == variant]
            if not found:
                return False
            for shard_index in (folder / name).glob("*.index.json"):
                wanted = set(json.loads(shard_index.read_text()).get("weight_map", {}).values())
                if any(not (folder / name / w).exists() for w in wanted):
                    return False
    return True


def folder_variant(folder, wanted: str | None) -> str | None:
    """The variant to load from a local ``folder``: ``wanted`` if the folder is complete in it, else the one it is.

    A folder downloaded for a GPU holds only fp16 files; on a CPU the course then loads those
    (``variant="fp16"``, upcast to ``dtype=float32``) rather than fail or download fp32 weights.
    A folder without fp16 files is loaded as it is (and cast, for a float16 run).
    """
    if wanted == "fp16":
        return "fp16" if folder_complete(folder, "fp16") else None
    return "fp16" if folder_complete(folder, "fp16") and not folder_complete(folder, None) else None
