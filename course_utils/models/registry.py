"""One registry of roles: which model each lesson loads, on which profile, device and dtype - and why.

A *role* is what a lesson needs a pipeline for (``text2img``, ``img2img``, ``inpaint``,
``upscale``, ``community``). :data:`ROLES` gives each role, in one row, its diffusers pipeline
class and its builders for `tiny` and `sd15-random`; its `sd15` Hub repository is
``hub.repo_ids(role)`` (known copies tried in turn). Adding a role is one row here, its builders in
:mod:`course_utils.models.builders`, its repository in ``hub.SD15_REPOS`` (and a lookalike in
:mod:`course_utils.models.lookalike`), and its lesson.

Default profile: ``sd15`` where a CUDA GPU is present and the weights are reachable, else
``tiny``; ``COURSE_PROFILE`` or the ``profile=`` argument overrides. Every choice is printed
with what decided it.
"""

import os
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from diffusers import (
    ControlNetModel,
    DiffusionPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
)

from ..device import (
    CourseError,
    describe_device,
    dtype_reason,
    fast_layout,
    get_device,
    get_dtype,
    mps_attention_slicing,
)
from . import builders, files, hub, tiny, weights
from .profiles import check_profile


class Part(NamedTuple):
    """A model a role adds on `sd15` to its repository's pipeline, from a Hub repository of its own (lesson 11's
    ControlNet): ``name`` (the pipeline's component), ``cls`` (its model class) and ``source`` (``source(variant)`` ->
    ``(folder, variant)`` to load it from, e.g. :func:`~course_utils.models.files.controlnet_source`)."""

    name: str
    cls: type
    source: Callable


@dataclass(frozen=True)
class Role:
    """Everything the course needs to load one role's pipeline on any profile.

    Attributes:
        pipeline (`type`): the diffusers pipeline class.
        tiny (`Callable[[type, torch.dtype], DiffusionPipeline]`): builds the `tiny` pipeline.
        random (`Callable[[type, torch.dtype], DiffusionPipeline]`): builds the `sd15-random` pipeline.
        tiny_source (`Callable[[], Path]`): what ``from_pretrained`` (or ``from_single_file``) loads on `tiny`.
        vae_fp32 (`bool`): keep the VAE in float32 whatever the dtype (the x4 upscaler's overflows in fp16).
        sd15_part (`Part`, *optional*): a model added to the `sd15` repository's pipeline; ``model_source`` is then
            that model's folder, as ``tiny_source`` is on `tiny`.
    """

    pipeline: type
    tiny: Callable
    random: Callable
    tiny_source: Callable
    vae_fp32: bool = False
    sd15_part: Part | None = None


# The `sd15` repositories of each role are hub.repo_ids(role): hub.SD15_REPOS and hub.KNOWN_COPIES, or COURSE_HUB_<ROLE>.
ROLES = {
    "text2img": Role(StableDiffusionPipeline, builders.tiny_text2img, builders.random_text2img, tiny.text2img_folder),
    "img2img": Role(
        StableDiffusionImg2ImgPipeline, builders.tiny_text2img, builders.random_text2img, tiny.text2img_folder
    ),
    "inpaint": Role(
        StableDiffusionInpaintPipeline, builders.tiny_inpaint, builders.random_inpaint, builders.tiny_inpaint_folder
    ),
    "upscale": Role(
        StableDiffusionUpscalePipeline,
        builders.tiny_upscale,
        builders.random_upscale,
        builders.tiny_upscale_folder,
        vae_fp32=True,
    ),
    # a community fine-tune; on `tiny` ONE original-layout file, so its source is a file, not a folder
    "community": Role(StableDiffusionPipeline, builders.tiny_community, builders.random_text2img, tiny.community_file),
    # text-to-image plus a canny ControlNet; its source on every profile is the ControlNet's folder (lesson 11)
    "controlnet": Role(
        StableDiffusionControlNetPipeline,
        builders.tiny_controlnet,
        builders.random_controlnet,
        tiny.controlnet_folder,
        sd15_part=Part("controlnet", ControlNetModel, files.controlnet_source),
    ),
}


def role(name: str) -> Role:
    """The :class:`Role` called ``name``; a `CourseError` listing the roles for an unknown one."""
    if name not in ROLES:
        raise CourseError(f"Unknown role {name!r}; expected one of {tuple(ROLES)}.")
    return ROLES[name]


@dataclass
class Choice:
    """What the course runs on: ``profile``, ``device``, ``dtype``, the ``reason`` for the profile and for the dtype."""

    profile: str
    device: str
    dtype: torch.dtype
    reason: str
    dtype_reason: str = ""

    def __post_init__(self):
        self.dtype_reason = self.dtype_reason or dtype_reason(self.device)

    def __str__(self) -> str:
        return (
            f"profile={self.profile} device={describe_device(self.device)} dtype={str(self.dtype).replace('torch.', '')} "
            f"({self.reason}) - {self.dtype_reason}"
        )


def choose(role_name: str = "text2img", profile: str | None = None, device: str | None = None) -> Choice:
    """Decide profile, device and dtype, and say what decided the profile.

    Args:
        role_name (`str`): the pipeline role (see :data:`ROLES`); its `sd15` repo is the one checked.
        profile (`str`, *optional*): force a profile; default ``COURSE_PROFILE`` or the rule below.
        device (`str`, *optional*): force a device; default :func:`course_utils.device.get_device`.

    The rule: ``sd15`` when there is a CUDA GPU and the weights are reachable (Hub, mirror,
    cache or ``COURSE_MODELS_DIR``), otherwise ``tiny``.
    """
    role(role_name)  # an unknown role is an error before anything else
    device = device or get_device()
    dtype = get_dtype(device)
    env = os.environ.get("COURSE_PROFILE", "").strip()
    if profile:
        reason = "profile= passed by the caller"
        if env and env != profile:
            reason += f"; COURSE_PROFILE={env} does not apply here"
        return Choice(check_profile(profile), device, dtype, reason)
    if env:
        return Choice(check_profile(env), device, dtype, f"COURSE_PROFILE={env}")
    if device != "cuda":
        return Choice(
            "tiny",
            device,
            dtype,
            "no CUDA GPU here, so the offline teaching model; COURSE_PROFILE=sd15 forces the real one",
        )
    try:
        repo, _ = hub.find(role_name, variant=_variant(dtype))
    except hub.RepoMissing as err:
        fallback_banner(role_name, "missing", err)
        return Choice(
            "tiny",
            device,
            dtype,
            f"CUDA found, but the Hub has no {hub.repo_id(role_name)}; see COURSE_HUB_{role_name.upper()}",
        )
    except CourseError as err:
        fallback_banner(role_name, "unreachable", err)
        return Choice(
            "tiny",
            device,
            dtype,
            "CUDA found, but SD 1.5 is neither cached nor reachable; see HF_ENDPOINT / COURSE_MODELS_DIR",
        )
    copy = "" if repo == hub.repo_ids(role_name)[0] else f" (from the copy {repo})"
    return Choice("sd15", device, dtype, f"CUDA GPU found and SD 1.5 reachable{copy}")


_BANNERS_SHOWN = set()  # (role, what): each fallback's banner once per Python process


def fallback_banner(role_name: str, what: str, error: Exception, say=print) -> None:
    """Print, once per process, the banner for a CUDA machine that falls back to `tiny`: what is missing, why, the ways out.

    Args:
        role_name (`str`): the role whose `sd15` repository could not be had.
        what (`str`): ``"missing"`` (the Hub answered: no such repository) or ``"unreachable"`` (no network, no cache).
        error (`Exception`): the course's error; its own lines (the repositories tried, the server) are shown.
    """
    if (role_name, what) in _BANNERS_SHOWN:
        return
    _BANNERS_SHOWN.add((role_name, what))
    rule = "!" * 100
    why = {
        "missing": "the Hub answered, but it has no such repository (removed, renamed or gated)",
        "unreachable": "the Hub cannot be reached and the weights are neither cached nor in COURSE_MODELS_DIR",
    }[what]
    lines = [
        rule,
        "!! This machine has a CUDA GPU, but this lesson runs the small offline teaching model `tiny`, NOT Stable Diffusion 1.5.",
        f"!! Missing: the `{role_name}` model ({', '.join(hub.repo_ids(role_name))}).",
        f"!! Why: {why}.",
        f"!!   ({str(error).splitlines()[0]})",
        "!! Three ways out, then restart the runtime and run the lesson again:",
        f"!!   1. a copy of the repository: COURSE_HUB_{role_name.upper()}=<org>/<name> (missing), or a mirror: HF_ENDPOINT=<url> (unreachable);",
        "!!   2. a folder made on a connected machine by `python -m course_utils download sd15 --to models`: COURSE_MODELS_DIR=/path/to/models;",
        "!!   3. tiny on purpose: COURSE_PROFILE=tiny (this banner goes away; the lessons run, with a small model).",
        rule,
    ]
    say("\n".join(lines))


def _variant(dtype: torch.dtype) -> str | None:
    """The weights to ask for: the fp16 variant for float16 (each repository's file list decides whether it has one)."""
    return "fp16" if dtype == torch.float16 else None


def load_pipeline(
    role_name: str = "text2img", profile: str | None = None, device: str | None = None, **kwargs
) -> DiffusionPipeline:
    """Load the pipeline for a lesson, on the right device, and print what was chosen.

    Args:
        role_name (`str`, defaults to ``"text2img"``): one of ``"text2img"``, ``"img2img"``,
            ``"inpaint"``, ``"upscale"``, ``"community"``, ``"controlnet"``.
        profile (`str`, *optional*): ``"sd15"``, ``"tiny"`` or ``"sd15-random"``; default from
            :func:`choose` (``COURSE_PROFILE`` or the GPU/Hub rule).
        device (`str`, *optional*): default :func:`course_utils.device.get_device`.
        **kwargs: passed to ``from_pretrained`` for `sd15` (e.g. ``scheduler=...``).

    Returns:
        `DiffusionPipeline`: the pipeline, moved to the device, with ``dtype`` fp16 on CUDA
        and fp32 elsewhere.
    """
    spec = role(role_name)
    choice = choose(role_name, profile, device)
    print(f"course_utils: role={role_name}", choice)
    if choice.profile == "sd15":
        _, source = hub.find(role_name, variant=_variant(choice.dtype), download=True)
        # the weights the folder has (fp16 only, on a CPU: upcast)
        variant = weights.folder_variant(source, _variant(choice.dtype))
        dtype = builders.upscaler_dtypes(choice.dtype) if spec.vae_fp32 else choice.dtype
        part = spec.sd15_part
        if part and part.name not in kwargs:  # e.g. SD 1.5 around hub.CONTROLNET_REPO's ControlNet
            folder, part_variant = part.source(_variant(choice.dtype))
            kwargs[part.name] = part.cls.from_pretrained(folder, dtype=dtype, variant=part_variant)
        pipe = spec.pipeline.from_pretrained(source, dtype=dtype, variant=variant, **kwargs)
    elif choice.profile == "tiny":
        pipe = spec.tiny(spec.pipeline, choice.dtype)
        pipe.set_progress_bar_config(disable=True)  # a tiny step takes milliseconds
    else:
        pipe = spec.random(spec.pipeline, choice.dtype)
    pipe = mps_attention_slicing(pipe.to(choice.device), choice.device)
    return fast_layout(pipe, choice.device, choice.dtype)


def model_source(role_name: str = "text2img", profile: str | None = None) -> str:
    """Where ``from_pretrained`` loads a role's model from: a local folder or the Hub cache's snapshot.

    On `sd15` a repository that is neither in ``COURSE_MODELS_DIR`` nor cached is downloaded first
    (the files of its pipeline only; see ``hub.resolve_model``).

    Handy for loading components one by one, e.g.
    ``UNet2DConditionModel.from_pretrained(cu.model_source(), subfolder="unet")``.

    Args:
        role_name (`str`): a role (see :data:`ROLES`); for ``"community"`` the `tiny` source is one
            ``.safetensors`` file (load it with ``from_single_file``); for ``"controlnet"`` it is the ControlNet's
            folder on every profile (``ControlNetModel.from_pretrained``; on `sd15` ask for ``variant="fp16"`` in
            float16).
        profile (`str`, *optional*): default from :func:`choose`. ``sd15-random`` has no folder.
    """
    spec = role(role_name)
    choice = choose(role_name, profile)
    profile = choice.profile
    if profile == "sd15":
        if spec.sd15_part:
            return spec.sd15_part.source(_variant(choice.dtype))[0]
        return hub.find(role_name, variant=_variant(choice.dtype), download=True)[1]
    if profile == "tiny":
        return str(spec.tiny_source())
    raise CourseError(
        f"The {profile!r} profile has no folder for role {role_name!r}: its models are built in memory; use load_pipeline()."
    )
