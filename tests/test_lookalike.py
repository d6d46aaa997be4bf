"""The lookalike Hub repositories (course_utils/models/lookalike*.py), small size: git layout, files, and that
diffusers loads each one the way the lessons load the real one (docs/lookalike-repos.md has the sources)."""

import json
import subprocess

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from course_utils.errors import CourseError
from course_utils.models import configs, files, hub, lookalike, lookalike_parts, original_layout

pytestmark = pytest.mark.slow  # loads each of the eight repositories (~25 s)

SD15 = hub.SD15_REPOS["text2img"]
INPAINT = hub.SD15_REPOS["inpaint"]
UPSCALE = hub.SD15_REPOS["upscale"]
ALL = {
    SD15,
    INPAINT,
    UPSCALE,
    hub.COUNTERFEIT_REPO,
    hub.EASYNEGATIVE_REPO,
    hub.LCM_LORA_REPO,
    hub.STYLE_LORA_REPO,
    hub.CONTROLNET_REPO,
}


def _folder(component: str, weights: str, variants=("",)) -> set:
    return {f"{component}/config.json"} | {f"{component}/{weights}{v}.safetensors" for v in variants}


TOKENIZER = {f"tokenizer/{n}" for n in ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")}
CARD = {".gitattributes", "README.md"}
SD_FOLDERS = (
    {"model_index.json", "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json"}
    | TOKENIZER
    | _folder("safety_checker", "model", ("", ".fp16"))
    | _folder("text_encoder", "model", ("", ".fp16"))
    | _folder("unet", "diffusion_pytorch_model", ("", ".fp16"))
    | _folder("vae", "diffusion_pytorch_model", ("", ".fp16"))
)
# Every file of the real repositories except pickles (.ckpt, .bin, .pt) and sample images (docs/lookalike-repos.md).
EXPECTED_FILES = {
    SD15: CARD
    | SD_FOLDERS
    | {
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "v1-5-pruned-emaonly.safetensors",
        "v1-5-pruned.safetensors",
    },
    INPAINT: CARD | SD_FOLDERS,
    UPSCALE: CARD
    | TOKENIZER
    | {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "low_res_scheduler/scheduler_config.json",
        "x4-upscaler-ema.safetensors",
    }
    | _folder("text_encoder", "model", ("", ".fp16"))
    | _folder("unet", "diffusion_pytorch_model", ("", ".fp16"))
    | _folder("vae", "diffusion_pytorch_model", ("", ".fp16")),
    hub.COUNTERFEIT_REPO: CARD
    | {f.replace(".fp16", "") for f in SD_FOLDERS if not f.startswith(("safety_checker/", "feature_extractor/"))}
    | {
        "Counterfeit-V2.5.safetensors",
        "Counterfeit-V2.5_pruned.safetensors",
        hub.COUNTERFEIT_FILE,
        "Counterfeit-V2.2.safetensors",
    },
    hub.EASYNEGATIVE_REPO: CARD | {hub.EASYNEGATIVE_FILE},
    hub.LCM_LORA_REPO: CARD | {hub.LCM_LORA_FILE},
    hub.STYLE_LORA_REPO: CARD | {hub.STYLE_LORA_FILE},
    hub.CONTROLNET_REPO: CARD | {"config.json", *hub.CONTROLNET_FILES.values()},
}

_SD_COMPONENTS = {
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# The real repositories' model_index.json, class names only.
REAL_MODEL_INDEX = {
    # diffusers docs, using-diffusers/loading.md: the model_index.json of SD 1.5 (shown there under RunwayML's
    # removed repository id; stable-diffusion-v1-5/stable-diffusion-v1-5 is its official copy).
    SD15: dict(_class_name="StableDiffusionPipeline", **_SD_COMPONENTS),
    # The inpainting pipeline with SD 1.5's components; DDIMScheduler: its scheduler_config.json as quoted in
    # third-party code ("_class_name": "DDIMScheduler", "_diffusers_version": "0.6.0.dev0"). Unverified on the Hub.
    INPAINT: dict(
        _class_name="StableDiffusionInpaintPipeline", **dict(_SD_COMPONENTS, scheduler=["diffusers", "DDIMScheduler"])
    ),
    # A tutorial's print(pipeline) of stabilityai/stable-diffusion-x4-upscaler (diffusers 0.15.1); the Hub's file is
    # 485 bytes, which these keys with "_diffusers_version": "0.9.0.dev0" (or "0.8.0.dev0") make exactly.
    UPSCALE: dict(
        _class_name="StableDiffusionUpscalePipeline",
        low_res_scheduler=["diffusers", "DDPMScheduler"],
        max_noise_level=350,
        scheduler=["diffusers", "DDIMScheduler"],
        text_encoder=["transformers", "CLIPTextModel"],
        tokenizer=["transformers", "CLIPTokenizer"],
        unet=["diffusers", "UNet2DConditionModel"],
        vae=["diffusers", "AutoencoderKL"],
    ),
    # Its folders (docs/lookalike-repos.md) have no safety checker or feature extractor; the file's exact content
    # (left out, or [null, null]) is unverified. PNDM: unverified.
    hub.COUNTERFEIT_REPO: dict(
        _class_name="StableDiffusionPipeline",
        **{k: v for k, v in _SD_COMPONENTS.items() if k not in ("safety_checker", "feature_extractor")},
    ),
}


@pytest.fixture(scope="session")
def repos(lookalikes):
    """All lookalikes, small size: the test run's one build (tests/conftest.py)."""
    return lookalikes


def git(folder, *args) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout.strip()


def same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def steps(n=2):
    return dict(num_inference_steps=n, generator=torch.Generator().manual_seed(0), output_type="np")


# --- the repositories -------------------------------------------------------------------------------------
def test_every_repo_the_sd15_profile_touches_is_built(repos):
    assert set(repos) == ALL == set(lookalike.lookalikes())
    assert set(hub.SD15_REPOS.values()) <= set(repos)


@pytest.mark.parametrize("repo", sorted(ALL))
def test_a_git_repo_on_main_with_one_commit_and_a_clean_tree(repos, repo):
    folder = repos[repo]
    kind = "datasets" if repo == hub.EASYNEGATIVE_REPO else "models"
    assert folder.relative_to(folder.parents[2]).as_posix() == f"{kind}/{repo}"  # <root>/<models|datasets>/<org>/<name>
    assert git(folder, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(folder, "rev-list", "--count", "main") == "1"
    assert git(folder, "status", "--porcelain", "--untracked-files=all") == ""
    assert set(git(folder, "ls-files").splitlines()) == EXPECTED_FILES[repo]


@pytest.mark.parametrize("repo", sorted(REAL_MODEL_INDEX))
def test_model_index_names_the_real_classes(repos, repo):
    index = json.loads((repos[repo] / "model_index.json").read_text())
    assert {k: v for k, v in index.items() if k != "_diffusers_version"} == REAL_MODEL_INDEX[repo]


def test_readme_says_lookalike_with_random_weights_and_the_real_licence(repos):
    licences = {
        SD15: "creativeml-openrail-m",
        UPSCALE: "openrail++",
        hub.LCM_LORA_REPO: "openrail++",
        hub.STYLE_LORA_REPO: "creativeml-openrail-m",
        hub.CONTROLNET_REPO: "openrail",
    }
    for repo, folder in repos.items():
        text = (folder / "README.md").read_text()
        assert "Lookalike" in text and "random" in text and f"`{repo}`" in text
        if repo in licences:
            assert f"license: {licences[repo]}\n" in text


def test_a_second_build_keeps_what_is_there_and_a_changed_one_is_rebuilt(repos):
    root = repos[SD15].parents[2]
    heads = {r: git(f, "rev-parse", "HEAD") for r, f in repos.items()}
    lora = repos[hub.LCM_LORA_REPO] / hub.LCM_LORA_FILE
    lora.write_bytes(b"not a LoRA")  # a damaged repository is rebuilt, the others kept
    again = lookalike.build_lookalikes(root, size="small")
    assert {r: git(f, "rev-parse", "HEAD") for r, f in again.items()} == heads  # reproducible: the same commit
    assert git(again[hub.LCM_LORA_REPO], "status", "--porcelain") == ""
    with safe_open(str(lora), "pt") as f:
        assert len(list(f.keys())) > 0


def test_unknown_size_or_repo_is_an_error(tmp_path):
    with pytest.raises(CourseError, match="size"):
        lookalike.build_lookalikes(tmp_path, size="huge")
    with pytest.raises(CourseError, match="nobody/nothing"):
        lookalike.build_lookalikes(tmp_path, repos=["nobody/nothing"])


# --- diffusers loads them as the lessons load the real ones -------------------------------------------------
def test_sd15_loads_with_its_safety_checker_and_runs(repos):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    pipe = quiet(DiffusionPipeline.from_pretrained(repos[SD15]))
    assert (
        type(pipe) is StableDiffusionPipeline and type(pipe.safety_checker).__name__ == "StableDiffusionSafetyChecker"
    )
    assert pipe.unet.config.block_out_channels == list(configs.TINY_UNET["block_out_channels"])
    assert pipe.vae.config.scaling_factor == configs.SD15_VAE["scaling_factor"]
    out = pipe("a photograph of an astronaut", height=64, width=64, **steps())
    assert out.images.shape == (1, 64, 64, 3) and out.nsfw_content_detected == [False]  # checked, not blacked out


def test_sd15_fp16_and_non_ema_variants_load(repos):
    from diffusers import DiffusionPipeline

    fp32 = DiffusionPipeline.from_pretrained(repos[SD15])
    fp16 = DiffusionPipeline.from_pretrained(repos[SD15], variant="fp16", dtype=torch.float16)
    for name in ("unet", "vae", "text_encoder", "safety_checker"):
        assert getattr(fp16, name).dtype == torch.float16, name
        a, b = getattr(fp16, name).state_dict(), getattr(fp32, name).state_dict()
        assert all(torch.equal(a[k], b[k].half()) for k in a), name  # the same weights, rounded
    non_ema = DiffusionPipeline.from_pretrained(repos[SD15], variant="non_ema")
    assert not same(non_ema.unet, fp32.unet) and same(non_ema.vae, fp32.vae)


def test_inpainting_loads_and_runs(repos):
    from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionInpaintPipeline

    pipe = quiet(DiffusionPipeline.from_pretrained(repos[INPAINT]))
    assert type(pipe) is StableDiffusionInpaintPipeline and type(pipe.scheduler) is DDIMScheduler
    assert pipe.unet.config.in_channels == 9
    image, mask = Image.new("RGB", (64, 64), "gray"), Image.new("L", (64, 64), 255)
    assert pipe("a hat", image=image, mask_image=mask, **steps()).images.shape == (1, 64, 64, 3)
    sd15 = DiffusionPipeline.from_pretrained(repos[SD15])
    assert same(pipe.vae, sd15.vae) and same(pipe.text_encoder, sd15.text_encoder)  # shared, as in the real pair
    assert (
        DiffusionPipeline.from_pretrained(repos[INPAINT], variant="fp16", dtype=torch.float16).unet.dtype
        == torch.float16
    )


def test_upscaler_loads_and_runs(repos):
    from diffusers import DiffusionPipeline, StableDiffusionUpscalePipeline

    pipe = quiet(DiffusionPipeline.from_pretrained(repos[UPSCALE]))
    assert type(pipe) is StableDiffusionUpscalePipeline
    assert (
        pipe.unet.config.in_channels == 7
        and pipe.vae.config.scaling_factor == configs.X4_UPSCALER_VAE["scaling_factor"]
    )
    assert (
        pipe.text_encoder.config.hidden_act == "gelu" and pipe.tokenizer.pad_token == "!"
    )  # SD 2's OpenCLIP, its tokenizer
    out = pipe("a cat", image=Image.new("RGB", (16, 16), "gray"), noise_level=20, **steps())
    assert out.images.shape == (1, 64, 64, 3)
    fp16 = DiffusionPipeline.from_pretrained(repos[UPSCALE], variant="fp16", dtype=torch.float16)
    assert fp16.unet.dtype == torch.float16


# --- the single files ---------------------------------------------------------------------------------------
def test_counterfeit_single_file_loads_with_sd15_configs(repos):
    from diffusers import DiffusionPipeline

    from course_utils import single_file

    path = repos[hub.COUNTERFEIT_REPO] / hub.COUNTERFEIT_FILE
    header = single_file.read_header(path)
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}
    assert set(single_file.group_keys(path)) == {
        "model.diffusion_model",
        "first_stage_model",
        "cond_stage_model.transformer",
    }
    pipe = single_file.load_single_file(path, config=repos[SD15], dtype=torch.float32)
    folder = DiffusionPipeline.from_pretrained(repos[hub.COUNTERFEIT_REPO])
    for name in ("unet", "vae", "text_encoder"):  # the same model as the repository's diffusers folders
        a, b = getattr(pipe, name).state_dict(), getattr(folder, name).state_dict()
        assert all(torch.equal(a[k], b[k].half().float()) for k in a), name
    sd15 = DiffusionPipeline.from_pretrained(repos[SD15])
    assert not same(folder.unet, sd15.unet)  # a fine-tune: other weights


def test_sd15_single_files_hold_the_ema_and_non_ema_weights(repos):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    folder = repos[SD15]
    ema, non_ema = (
        DiffusionPipeline.from_pretrained(folder),
        DiffusionPipeline.from_pretrained(folder, variant="non_ema"),
    )
    kw = dict(config=str(folder), local_files_only=True)
    emaonly = StableDiffusionPipeline.from_single_file(str(folder / "v1-5-pruned-emaonly.safetensors"), **kw)
    assert same(emaonly.unet, ema.unet) and same(emaonly.vae, ema.vae) and same(emaonly.text_encoder, ema.text_encoder)
    pruned = StableDiffusionPipeline.from_single_file(str(folder / "v1-5-pruned.safetensors"), **kw)
    assert same(pruned.unet, non_ema.unet)
    pruned_ema = StableDiffusionPipeline.from_single_file(
        str(folder / "v1-5-pruned.safetensors"), extract_ema=True, **kw
    )
    assert same(pruned_ema.unet, ema.unet)
    with safe_open(str(folder / "v1-5-pruned.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert "model_ema.diffusion_modelinput_blocks00weight" in keys and "alphas_cumprod" in keys
        betas = f.get_tensor("betas")
    assert betas.shape == (1000,) and abs(betas[0].item() - configs.SD15_SCHEDULER["beta_start"]) < 1e-9


def test_upscaler_single_file_is_sd2_layout_and_loads(repos):
    from diffusers import DiffusionPipeline, StableDiffusionUpscalePipeline

    folder = repos[UPSCALE]
    path = folder / "x4-upscaler-ema.safetensors"
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    prefix = original_layout.OPEN_CLIP_PREFIX
    layers = configs.TINY_UPSCALER_TEXT_ENCODER["num_hidden_layers"]
    assert f"{prefix}transformer.resblocks.{layers}.attn.in_proj_weight" in keys  # the block diffusers drops
    assert {
        f"{prefix}text_projection",
        "model.diffusion_model.label_emb.weight",
        "low_scale_model.alphas_cumprod",
    } <= keys
    pipe = StableDiffusionUpscalePipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    ref = DiffusionPipeline.from_pretrained(folder)
    assert same(pipe.unet, ref.unet) and same(pipe.vae, ref.vae) and same(pipe.text_encoder, ref.text_encoder)


# --- the embedding and the LoRA -------------------------------------------------------------------------------
def test_easynegative_is_an_a1111_embedding_textual_inversion_reads(repos):
    from diffusers import DiffusionPipeline

    path = repos[hub.EASYNEGATIVE_REPO] / hub.EASYNEGATIVE_FILE
    with safe_open(str(path), "pt") as f:
        assert list(f.keys()) == ["emb_params"]
        vectors = f.get_tensor("emb_params")
    assert vectors.shape == (configs.EASYNEGATIVE_VECTORS, configs.TINY_TEXT_ENCODER["hidden_size"])
    pipe = DiffusionPipeline.from_pretrained(repos[SD15])
    before = len(pipe.tokenizer)
    pipe.load_textual_inversion(str(path), token="EasyNegative")
    assert len(pipe.tokenizer) == before + configs.EASYNEGATIVE_VECTORS
    ids = pipe.tokenizer.convert_tokens_to_ids(["EasyNegative"] + [f"EasyNegative_{i}" for i in range(1, len(vectors))])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), vectors)


def test_lcm_lora_has_the_kohya_key_format_and_loads_into_sd15(repos):
    import peft
    from diffusers import DiffusionPipeline, LCMScheduler

    path = repos[hub.LCM_LORA_REPO] / hub.LCM_LORA_FILE
    shapes = lookalike_parts.lora_shapes(lookalike_parts.architecture("small"))
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor(next(iter(shapes)) + ".lora_down.weight").dtype == torch.float16
    assert keys == {f"{name}.{part}" for name in shapes for part in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert all(k.startswith("lora_unet_") for k in keys)
    pipe = quiet(DiffusionPipeline.from_pretrained(repos[SD15]))
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    run = dict(prompt="a cat", height=64, width=64, guidance_scale=1.0, **dict(steps(), output_type="latent"))
    base = pipe(**run).images
    pipe.load_lora_weights(
        str(repos[hub.LCM_LORA_REPO]), adapter_name="lcm"
    )  # the folder, as files.lora_source gives it
    assert pipe.get_list_adapters() == {"unet": ["lcm"]}
    assert sum(isinstance(m, peft.tuners.lora.LoraLayer) for m in pipe.unet.modules()) == len(shapes)
    run["generator"] = torch.Generator().manual_seed(0)
    assert not torch.equal(pipe(**run).images, base)


def test_style_lora_has_kohya_keys_for_unet_and_text_encoder_and_loads_into_counterfeit(repos, monkeypatch):
    import peft
    from diffusers import DiffusionPipeline

    path = repos[hub.STYLE_LORA_REPO] / hub.STYLE_LORA_FILE
    shapes = lookalike_parts.lora_shapes(lookalike_parts.architecture("small"), "style_lora")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor(next(iter(shapes)) + ".lora_down.weight").dtype == torch.float16
    assert keys == {f"{name}.{part}" for name in shapes for part in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight" in keys
    pipe = quiet(DiffusionPipeline.from_pretrained(repos[hub.COUNTERFEIT_REPO]))  # the model it was made for
    run = dict(prompt="1girl, at dusk", height=64, width=64, **dict(steps(), output_type="latent"))
    base = pipe(**run).images
    monkeypatch.setenv("COURSE_MODELS_DIR", str(repos[SD15].parents[1]))  # <models>/<org>/<name>, as downloaded
    pipe.load_lora_weights(files.lora_source("sd15"), adapter_name="style")  # as lesson 07 loads it
    assert pipe.get_list_adapters() == {"unet": ["style"], "text_encoder": ["style"]}
    layers = [m for part in (pipe.unet, pipe.text_encoder) for m in part.modules()]
    assert sum(isinstance(m, peft.tuners.lora.LoraLayer) for m in layers) == len(shapes)
    run["generator"] = torch.Generator().manual_seed(0)
    assert not torch.equal(pipe(**run).images, base)
    pipe.set_adapters(["style"], adapter_weights=[0.0])  # scale 0: the model without it, text encoder included
    run["generator"] = torch.Generator().manual_seed(0)
    assert torch.equal(pipe(**run).images, base)


def test_controlnet_is_a_model_repo_in_both_dtypes_and_drives_sd15(repos):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    folder = repos[hub.CONTROLNET_REPO]
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "ControlNetModel"
    assert (
        tuple(config["conditioning_embedding_out_channels"])
        == lookalike_parts.architecture("small")["controlnet_embedding"]
    )
    fp32 = ControlNetModel.from_pretrained(folder)
    fp16 = ControlNetModel.from_pretrained(folder, variant="fp16", dtype=torch.float16)
    assert fp16.dtype == torch.float16 and same(fp32.half(), fp16)
    zero_convs = [*fp32.controlnet_down_blocks, fp32.controlnet_mid_block]
    assert all(z.weight.abs().sum() > 0 for z in zero_convs)  # random, as a trained ControlNet's are not zero
    pipe = quiet(
        StableDiffusionControlNetPipeline.from_pretrained(
            repos[SD15], controlnet=ControlNetModel.from_pretrained(folder)
        )
    )
    edges = Image.new("RGB", (64, 64))
    run = dict(prompt="a cat", image=edges, height=64, width=64, **dict(steps(), output_type="latent"))
    scaled = pipe(**run, controlnet_conditioning_scale=1.0).images
    run["generator"] = torch.Generator().manual_seed(0)
    assert not torch.equal(pipe(**run, controlnet_conditioning_scale=0.0).images, scaled)


def test_full_size_facts_without_building():
    """What size="full" would write, checked on meta tensors: the real LCM-LoRA's 278 layers and 134.5 MB, and the
    style LoRA's 264 layers (192 in the UNet, 72 in the text encoder) and 151 MB (the Hub's listing)."""
    full = lookalike_parts.architecture("full")
    assert full["unet"] is configs.SD15_UNET and full["x4_unet"] is configs.X4_UPSCALER_UNET
    shapes = lookalike_parts.lora_shapes(full)
    numbers = sum(torch.Size(d).numel() + torch.Size(u).numel() for d, u in shapes.values())
    assert len(shapes) == 278 and numbers == 67_252_224  # x 2 bytes (fp16) = 134.5 MB, the real file's size
    style = lookalike_parts.lora_shapes(full, "style_lora")
    numbers = sum(torch.Size(d).numel() + torch.Size(u).numel() for d, u in style.values())
    assert len(style) == 264 and sum(k.startswith("lora_te_") for k in style) == 72
    tensors = {
        f"{name}.{part}": (torch.float16, shape)
        for name, (d, u) in style.items()
        for part, shape in (("lora_down.weight", d), ("lora_up.weight", u), ("alpha", ()))
    }
    assert numbers == 75_497_472 and round(safetensors_size(tensors) / 1e6) == 151


# --- full size, checked against the real files' byte sizes without building anything -----------------------
_BYTES = {torch.float32: 4, torch.float16: 2, torch.int64: 8}


def safetensors_size(tensors: dict) -> int:
    """The size of a .safetensors file holding ``{name: (dtype, shape)}`` (metadata {"format": "pt"}), as
    safetensors lays it out: 8 bytes, the JSON header padded to 8, the tensors by dtype size then name."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in sorted(tensors.items(), key=lambda kv: (-_BYTES[kv[1][0]], kv[0])):
        size = _BYTES[dtype] * torch.Size(shape).numel()
        header[name] = {
            "dtype": {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    return 8 + len(text) + (-len(text)) % 8 + offset


def component_tensors(kind: str, cfg: dict, dtype) -> dict:
    """``{name: (dtype, shape)}`` of a component file as the lookalike writes it, from a meta-device model."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        model = {
            "text": lambda: CLIPTextModel(CLIPTextConfig(**cfg)),
            "unet": lambda: UNet2DConditionModel(**cfg),
            "vae": lambda: AutoencoderKL(**cfg),
        }[kind]()
    out = {
        ("text_model." if kind == "text" else "") + k: (dtype, tuple(t.shape)) for k, t in model.state_dict().items()
    }
    if kind == "text":
        out["text_model.embeddings.position_ids"] = (torch.int64, (1, cfg["max_position_embeddings"]))
    return out


X4_FILES = (
    ("text", "text_encoder/model"),
    ("unet", "unet/diffusion_pytorch_model"),
    ("vae", "vae/diffusion_pytorch_model"),
)


def test_size_arithmetic_matches_the_small_files(repos):
    small = lookalike_parts.architecture("small")
    for kind, stem in X4_FILES:
        for variant, dtype in (("", torch.float32), (".fp16", torch.float16)):
            path = repos[UPSCALE] / f"{stem}{variant}.safetensors"
            assert safetensors_size(component_tensors(kind, small[f"x4_{kind}"], dtype)) == path.stat().st_size, (
                path.name
            )


def test_full_size_x4_files_have_the_real_files_byte_sizes():
    """The Hub's fp16 files of stabilityai/stable-diffusion-x4-upscaler, byte for byte (sizes from a third-party
    download table, airunner's SD_FILE_BOOTSTRAP_DATA): same tensor names, shapes and dtypes."""
    real = {"text": 680_821_096, "unet": 946_878_752, "vae": 110_674_374}
    full = lookalike_parts.architecture("full")
    for kind, _ in X4_FILES:
        assert safetensors_size(component_tensors(kind, full[f"x4_{kind}"], torch.float16)) == real[kind], kind


def test_full_size_sd15_files_have_the_real_files_sizes_in_mib():
    """stable-diffusion-v1-5's component files, in whole MiB as a third-party design note lists them
    ("verified against the HF API"): the full configs give the same sizes."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    full = lookalike_parts.architecture("full")
    real_mib = {
        ("unet", torch.float32): 3278,
        ("unet", torch.float16): 1639,
        ("text", torch.float32): 469,
        ("text", torch.float16): 234,
        ("vae", torch.float32): 319,
        ("vae", torch.float16): 159,
    }
    for (kind, dtype), mib in real_mib.items():
        assert safetensors_size(component_tensors(kind, full[kind], dtype)) // 2**20 == mib, (kind, dtype)
    with torch.device("meta"):
        checker = StableDiffusionSafetyChecker(CLIPConfig(**full["safety_checker"]))
    numbers = sum(t.numel() for t in checker.state_dict().values())
    assert (numbers * 4 // 2**20, numbers * 2 // 2**20) == (1159, 579)  # safety_checker/model(.fp16).safetensors
