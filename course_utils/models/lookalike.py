"""Lookalike Hub repositories: every repository the `sd15` profile touches, as a local git repository with
random weights, for a Hub mirror (olah, see ``course_utils.hub_mirror``) to serve when the Hub is out of reach.

Each lookalike has the real repository's id, type (model or dataset), branch ``main``, file names and folder
layout: ``model_index.json`` naming the same classes, ``*.fp16.safetensors`` variants where the real one has
them, single ``.safetensors`` checkpoints in the original (CompVis/LDM) key layout, the embedding in A1111's
format, the LoRA in the real file's key format. The weights are random and seeded (a build is reproducible,
down to the commit id), in one of two sizes:

* ``size="small"``: `tiny`'s sizes (``configs.TINY_*``, 64x64 images), so every lesson runs on a laptop CPU;
* ``size="full"``: the real sizes (``configs.SD15_*``, ``configs.X4_UPSCALER_*``), for GPU runs; gigabytes.

Every architecture comes from :mod:`.configs` and every pipeline from :mod:`.builders`; pickled files
(``*.ckpt``, ``*.bin``, ``*.pt``) are not copied. ``docs/lookalike-repos.md`` lists, per repository, which
facts are copied, where each comes from, and which are unverified.

    build_lookalikes("mirrors")            # -> {"stable-diffusion-v1-5/stable-diffusion-v1-5": Path(...), ...}

lays out ``mirrors/models/<org>/<name>`` and ``mirrors/datasets/<org>/<name>``, each a git repository with one
commit on ``main``. A repository whose commit carries the same build stamp (size, configs, this code, the
library versions) is kept; any other is rebuilt.
"""

import contextlib
import copy
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from diffusers import (
    DDIMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

from ..errors import CourseError
from . import builders, configs, hub, original_layout, tiny

SIZES = ("small", "full")
BUILD_VERSION = 2  # bump when what a build writes changes in a way the stamp does not see
GIT_USER = ("sd-course lookalike", "lookalike@sd-course.invalid")
GIT_DATE = "2024-01-01T00:00:00+00:00"  # fixed, so that the same files give the same commit id
STAMP_LINE = "lookalike-build: "

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
    embedding=500,
)


def architecture(size: str) -> dict:
    """The configs a lookalike of ``size`` is built from (all from :mod:`.configs`).

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
        )
    raise CourseError(f"Unknown lookalike size {size!r}; expected one of {SIZES}.")


# --- parts ----------------------------------------------------------------------------------------------
def safety_checker(arch: dict) -> tuple:
    """SD 1.5's safety checker and feature extractor, random (seeded).

    The 17 + 3 concept embeddings and their thresholds keep their constructed values (ones): the cosine
    similarity of an image to them is at most 1, so no image is flagged and none is blacked out.
    """
    torch.manual_seed(SEEDS["safety_checker"])
    checker = StableDiffusionSafetyChecker(CLIPConfig(**arch["safety_checker"])).eval()
    return checker, CLIPImageProcessor(**configs.SD15_FEATURE_EXTRACTOR)


def sd15_pipeline(arch: dict, seed: int, unet_cfg: dict | None = None, cls=StableDiffusionPipeline):
    """An SD 1.5-shaped pipeline with random weights and SD 1.5's safety checker (as the Hub repositories have)."""
    parts = builders.random_text2img_components(arch["text"], unet_cfg or arch["unet"], arch["vae"], seed=seed)
    parts["safety_checker"], parts["feature_extractor"] = safety_checker(arch)
    parts["requires_safety_checker"] = True
    return cls(**parts)


def random_unet(cfg: dict, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**cfg)


def x4_pipeline(arch: dict):
    """The x4 upscaler with random weights, and the 1-block-deeper OpenCLIP text model its single file holds.

    SD 2's text encoder is OpenCLIP ViT-H with 24 blocks; SD 2 reads the penultimate layer, so diffusers'
    ``text_encoder`` keeps 23 (``num_hidden_layers``) and the checkpoint file all 24.
    """
    cfg = CLIPTextConfig(**dict(arch["x4_text"], num_hidden_layers=arch["x4_text"]["num_hidden_layers"] + 1))
    torch.manual_seed(SEEDS["upscaler"])
    whole = CLIPTextModel(cfg)
    text_encoder = copy.deepcopy(whole)
    text_encoder.encoder.layers = text_encoder.encoder.layers[:-1]
    text_encoder.config.num_hidden_layers -= 1
    parts = builders.random_upscaler_components(text_encoder, arch["x4_unet"], arch["x4_vae"], seed=SEEDS["upscaler"])
    return StableDiffusionUpscalePipeline(**parts), whole


def lora_shapes(arch: dict) -> dict:
    """``{kohya layer name: (lora_down shape, lora_up shape)}`` for each UNet layer ``arch["lora"]`` targets.

    The layer name is ``lora_unet_`` + the diffusers module path with dots as underscores, e.g.
    ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``. Down is ``[rank, in]``
    (``[rank, in, kh, kw]`` for a convolution), up ``[out, rank]`` (``[out, rank, 1, 1]``).
    Built on the meta device: no memory, any size.
    """
    spec = arch["lora"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**arch["unet"])
    rank, out = spec["rank"], {}
    for name, module in unet.named_modules():
        if not any(name == t or name.endswith("." + t) for t in spec["target_modules"]):
            continue
        if isinstance(module, torch.nn.Linear):
            out["lora_unet_" + name.replace(".", "_")] = ((rank, module.in_features), (module.out_features, rank))
        elif isinstance(module, torch.nn.Conv2d):
            out["lora_unet_" + name.replace(".", "_")] = (
                (rank, module.in_channels, *module.kernel_size),
                (module.out_channels, rank, 1, 1),
            )
    return out


def lora_state_dict(arch: dict, dtype=torch.float16) -> dict:
    """A LoRA for the SD 1.5 UNet in the LCM-LoRA file's key format (kohya's, with diffusers' layer names).

    Per layer of :func:`lora_shapes`: ``<name>.lora_down.weight``, ``<name>.lora_up.weight`` (random,
    seeded) and ``<name>.alpha`` (a scalar, ``arch["lora"]["alpha"]``; the scale is alpha / rank).
    """
    gen = torch.Generator().manual_seed(SEEDS["lora"])
    out = {}
    for name, (down, up) in lora_shapes(arch).items():
        fan_in = int(torch.tensor(down[1:]).prod())
        out[name + ".lora_down.weight"] = (torch.randn(down, generator=gen) / fan_in**0.5).to(dtype)
        out[name + ".lora_up.weight"] = (torch.randn(up, generator=gen) * 0.01).to(dtype)
        out[name + ".alpha"] = torch.tensor(float(arch["lora"]["alpha"]), dtype=dtype)
    return out


# --- writing a repository's files -----------------------------------------------------------------------
def write_tokenizer(folder: Path, pad_token: str | None = None) -> None:
    """CLIP's tokenizer as the Hub repositories store it: ``vocab.json``, ``merges.txt``, ``special_tokens_map.json``,
    ``tokenizer_config.json`` (transformers 5 would save ``tokenizer.json`` instead). ``pad_token``: SD 2's is ``"!"``."""
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
    if (
        "feature_extractor" in index
    ):  # without torchvision transformers makes a CLIPImageProcessorPil; the Hub names the class
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


def write_readme(folder: Path, spec: "Lookalike", size: str) -> None:
    sizes = {
        "small": "small (the course's `tiny` sizes, 64x64 images: for CPUs)",
        "full": "full (the real sizes: for GPUs)",
    }
    folder.joinpath("README.md").write_text(
        f"---\nlicense: {spec.licence}\ntags:\n- sd-course\n- lookalike\n- random-weights\n---\n"
        f"# Lookalike of `{spec.repo_id}`\n\n"
        f"**This is not the real {spec.what}.** The course *Stable Diffusion, taken apart and put back together* made this "
        f"repository (`course_utils.models.lookalike`) to stand in for the Hugging Face Hub {spec.repo_type} repository "
        f"`{spec.repo_id}` where the Hub cannot be reached. It has the real repository's id, type, file names and folder "
        f"layout, but its weights are **random** - size {sizes[size]} - so it draws noise.\n\n"
        f"The real repository's licence: `{spec.licence}`. Which facts about the real repository this copy copies, where each "
        "comes from, and which are unverified: `docs/lookalike-repos.md` in the course. Pickled files of the real "
        "repository (`.ckpt`, `.bin`, `.pt`) are not copied.\n"
    )
    # The Hub's .gitattributes sends weights to git-lfs; a lookalike stores them as plain git blobs (no git-lfs needed).
    folder.joinpath(".gitattributes").write_text(
        "# The Hub's copy of this file routes *.safetensors, *.ckpt, *.bin, ... through git-lfs (filter=lfs).\n"
        "# This lookalike stores every file as a plain git blob, so it needs no git-lfs.\n"
    )


def write_sd15(folder: Path, size: str) -> None:
    """stable-diffusion-v1-5/stable-diffusion-v1-5: diffusers folders (+ fp16 and non-EMA UNet variants), two single files."""
    arch = architecture(size)
    pipe = sd15_pipeline(arch, SEEDS["sd15"])  # its UNet holds the EMA weights, as the repository's default unet does
    non_ema = random_unet(arch["unet"], SEEDS["non_ema"])
    schedule = original_layout.schedule_buffers(
        configs.SD15_SCHEDULER["beta_start"],
        configs.SD15_SCHEDULER["beta_end"],
        configs.SD15_SCHEDULER["num_train_timesteps"],
    )
    original_layout.save_single_file(pipe, folder / "v1-5-pruned-emaonly.safetensors", extra=schedule)
    ema = original_layout.ema_state_dict(original_layout.to_original_state_dict(pipe))
    ema.update({"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(0, dtype=torch.int32)})
    both = types.SimpleNamespace(unet=non_ema, vae=pipe.vae, text_encoder=pipe.text_encoder)  # non-EMA + EMA weights
    original_layout.save_single_file(both, folder / "v1-5-pruned.safetensors", extra={**schedule, **ema})
    write_pipeline(pipe, folder, diffusers_version="0.6.0")
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        non_ema.save_pretrained(tmp, safe_serialization=True, variant="non_ema")
        shutil.copyfile(
            Path(tmp) / "diffusion_pytorch_model.non_ema.safetensors",
            folder / "unet" / "diffusion_pytorch_model.non_ema.safetensors",
        )


def write_inpainting(folder: Path, size: str) -> None:
    """stable-diffusion-v1-5/stable-diffusion-inpainting: the 9-channel UNet, DDIM, fp16 variants; no single .safetensors."""
    arch = architecture(size)
    pipe = sd15_pipeline(arch, SEEDS["sd15"], arch["inpaint_unet"], cls=StableDiffusionInpaintPipeline)
    pipe.scheduler = DDIMScheduler.from_config(configs.SD15_SCHEDULER)  # the repository's scheduler is DDIM
    write_pipeline(pipe, folder)


def write_upscaler(folder: Path, size: str) -> None:
    """stabilityai/stable-diffusion-x4-upscaler: the diffusers folders (+ fp16) and ``x4-upscaler-ema.safetensors``."""
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
    original_layout.save_single_file(
        pipe, folder / "x4-upscaler-ema.safetensors", extra=extra, text_encoder_layout="open_clip"
    )
    write_pipeline(pipe, folder, diffusers_version="0.9.0.dev0", pad_token="!")


def write_counterfeit(folder: Path, size: str) -> None:
    """gsdf/Counterfeit-V2.5: diffusers folders (no fp16 variants, no safety checker) and four single .safetensors files.

    The real repository's folders are scheduler, text_encoder, tokenizer, unet and vae (and sample images): no
    ``safety_checker`` or ``feature_extractor`` (docs/lookalike-repos.md), so ``model_index.json`` names neither.
    """
    arch = architecture(size)
    parts = builders.random_text2img_components(arch["text"], arch["unet"], arch["vae"], seed=SEEDS["counterfeit"])
    parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = StableDiffusionPipeline(**parts)
    original_layout.save_single_file(pipe, folder / "Counterfeit-V2.5.safetensors")
    original_layout.save_single_file(pipe, folder / "Counterfeit-V2.5_pruned.safetensors")
    original_layout.save_single_file(pipe, folder / hub.COUNTERFEIT_FILE, dtype=torch.float16)
    v22 = builders.random_text2img_components(arch["text"], arch["unet"], arch["vae"], seed=SEEDS["counterfeit_v22"])
    original_layout.save_single_file(types.SimpleNamespace(**v22), folder / "Counterfeit-V2.2.safetensors")
    write_pipeline(pipe, folder, variants=())


def write_easynegative(folder: Path, size: str) -> None:
    """gsdf/EasyNegative (a dataset): ``EasyNegative.safetensors``, A1111's format: one tensor ``emb_params``."""
    from safetensors.torch import save_file

    hidden = architecture(size)["text"]["hidden_size"]
    gen = torch.Generator().manual_seed(SEEDS["embedding"])
    vectors = torch.randn(configs.EASYNEGATIVE_VECTORS, hidden, generator=gen) * 0.02  # CLIP's token embeddings' scale
    save_file({"emb_params": vectors.contiguous()}, str(folder / hub.EASYNEGATIVE_FILE))


def write_lcm_lora(folder: Path, size: str) -> None:
    """latent-consistency/lcm-lora-sdv1-5: ``pytorch_lora_weights.safetensors`` (fp16, kohya-style keys, UNet only)."""
    from safetensors.torch import save_file

    save_file(lora_state_dict(architecture(size)), str(folder / hub.LCM_LORA_FILE), metadata={"format": "pt"})


@dataclass(frozen=True)
class Lookalike:
    """One repository: its id and type, the real one's licence, what it is, and the function that writes its files."""

    repo_id: str
    repo_type: str  # "model" or "dataset"
    licence: str
    what: str
    write: Callable[[Path, str], None]

    def path(self, root) -> Path:
        """``root/models/<org>/<name>`` (or ``root/datasets/...``): where olah looks for it."""
        return Path(root) / f"{self.repo_type}s" / self.repo_id


def lookalikes() -> dict:
    """Every repository the `sd15` profile touches (:mod:`.hub`), as ``{repo_id: Lookalike}``."""
    specs = [
        Lookalike(hub.SD15_REPOS["text2img"], "model", "creativeml-openrail-m", "Stable Diffusion 1.5", write_sd15),
        Lookalike(
            hub.SD15_REPOS["inpaint"],
            "model",
            "creativeml-openrail-m",
            "Stable Diffusion 1.5 inpainting model",
            write_inpainting,
        ),
        Lookalike(hub.SD15_REPOS["upscale"], "model", "openrail++", "Stable Diffusion x4 upscaler", write_upscaler),
        Lookalike(hub.COUNTERFEIT_REPO, "model", "creativeml-openrail-m", "Counterfeit-V2.5", write_counterfeit),
        Lookalike(hub.EASYNEGATIVE_REPO, "dataset", "other", "EasyNegative embedding", write_easynegative),
        Lookalike(hub.LCM_LORA_REPO, "model", "openrail++", "LCM-LoRA for SD 1.5", write_lcm_lora),
    ]
    out = {s.repo_id: s for s in specs}
    missing = set(hub.SD15_REPOS.values()) - set(out)
    if missing:  # a role added to hub.SD15_REPOS needs a lookalike here
        raise CourseError(f"No lookalike for {sorted(missing)}: add one to course_utils/models/lookalike.py.")
    return out


# --- git ------------------------------------------------------------------------------------------------
def _git(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git in ``folder``, isolated from the user's and the system's git settings (no hooks, no git-lfs filters)."""
    if shutil.which("git") is None:
        raise CourseError("The lookalike repositories are git repositories, and `git` is not installed.")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_DATE=GIT_DATE,
        GIT_COMMITTER_DATE=GIT_DATE,
        GIT_TERMINAL_PROMPT="0",
    )
    cmd = [
        "git",
        "-c",
        f"user.name={GIT_USER[0]}",
        "-c",
        f"user.email={GIT_USER[1]}",
        "-c",
        "core.compression=0",
        "-c",
        "commit.gpgsign=false",
        "-C",
        str(folder),
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and proc.returncode:
        raise CourseError(f"git {' '.join(args)} failed in {folder}: {proc.stderr.strip()}")
    return proc


def _commit(folder: Path, message: str) -> None:
    _git(folder, "init", "-q", "-b", "main")
    _git(folder, "add", "-A")
    _git(folder, "commit", "-q", "-m", message)


def stamp(spec: Lookalike, size: str) -> str:
    """A hash of everything a build depends on: size, configs, this code, the tokenizer and the library versions."""
    import diffusers
    import safetensors
    import transformers

    parts = dict(
        version=BUILD_VERSION,
        repo=spec.repo_id,
        type=spec.repo_type,
        size=size,
        configs={k: getattr(configs, k) for k in dir(configs) if k.isupper()},
        code=[inspect.getsource(m) for m in (original_layout, builders)] + [Path(__file__).read_text()],
        tokenizer=tiny.digest(tiny.TOKENIZER_DIR),
        libs=[
            diffusers.__version__,
            transformers.__version__,
            safetensors.__version__,
            torch.__version__.split("+")[0],
        ],
    )
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_current(folder: Path, build: str) -> bool:
    """``folder`` is a git repository with one commit on ``main`` carrying ``build``'s stamp, and nothing changed since."""
    if not (folder / ".git").is_dir():
        return False
    head = _git(folder, "log", "-1", "--format=%B", "main", check=False)
    count = _git(folder, "rev-list", "--count", "main", check=False)
    status = _git(folder, "status", "--porcelain", "--untracked-files=all", check=False)
    return (
        head.returncode == 0
        and f"{STAMP_LINE}{build}" in head.stdout
        and count.stdout.strip() == "1"
        and status.returncode == 0
        and not status.stdout.strip()
    )


@contextlib.contextmanager
def quiet():
    """No progress bars or notes from diffusers/transformers while building (restored afterwards)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        if bars:
            transformers_logging.enable_progress_bar()


def build_one(spec: Lookalike, root, size: str = "small") -> Path:
    """Build one lookalike under ``root`` (unless an identical build is there); returns its folder."""
    target, build = spec.path(root), stamp(spec, size)
    if is_current(target, build):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-building-", dir=target.parent))
    try:
        with quiet():
            spec.write(tmp, size)
        write_readme(tmp, spec, size)
        _commit(
            tmp,
            f"Lookalike of {spec.repo_id} ({size} size, random weights), made by sd-course\n\n{STAMP_LINE}{build}\n",
        )
        if target.exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)  # whole or not at all: a half-built repository is never served
        except OSError:  # another process put its build there first
            if not is_current(target, build):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_lookalikes(root, size: str = "small", repos=None) -> dict:
    """Build the lookalike repositories under ``root`` (``root/models/<org>/<name>``, ``root/datasets/...``).

    Args:
        root (`str` or `os.PathLike`): the mirror's repository folder (olah's ``mirrors-path``).
        size (`str`, defaults to ``"small"``): ``"small"`` (CPU-sized: all six repositories in ~10 s on 2 CPU
            cores, ~280 MB of files plus as much in ``.git``) or ``"full"`` (the real sizes: ~60 GB of files
            plus as much in ``.git``; build the ones you need with ``repos``).
        repos (iterable of `str`, *optional*): repository ids; default all of :func:`lookalikes`.

    Returns:
        `dict[str, Path]`: repository id -> its git repository (working tree and ``.git``).

    Raises:
        CourseError: an unknown size or repository id, or git missing or failing.
    """
    architecture(size)  # check the size first
    specs = lookalikes()
    wanted = list(specs) if repos is None else list(repos)
    unknown = [r for r in wanted if r not in specs]
    if unknown:
        raise CourseError(f"No lookalike of {unknown}; known: {sorted(specs)}.")
    return {repo: build_one(specs[repo], root, size) for repo in wanted}
