import pytest
import torch

import course_utils as cu
from course_utils.errors import CourseError
from course_utils.models import hub, registry, tiny, weights


def test_env_profile_wins(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "sd15-random")
    assert cu.choose().profile == "sd15-random"


def test_unknown_profile_and_role(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "sdxl")
    with pytest.raises(cu.CourseError, match="Unknown profile"):
        cu.choose()
    with pytest.raises(cu.CourseError, match="Unknown role"):
        cu.choose("video")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_default_without_gpu_is_tiny_and_says_why(monkeypatch, capsys):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    choice = cu.setup()
    assert choice.profile == "tiny" and choice.device == "cpu" and choice.dtype == torch.float32
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "profile=tiny" in out and "no CUDA GPU" in out


def test_hub_unreachable_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "cached", lambda *args, **kwargs: None)
    with pytest.raises(cu.CourseError) as info:
        cu.load_pipeline("text2img", profile="sd15", device="cpu")
    message = str(info.value)
    for needle in (
        "HF_ENDPOINT",
        "COURSE_MODELS_DIR",
        "COURSE_PROFILE=tiny",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
    ):
        assert needle in message


def test_hub_unreachable_online(monkeypatch):
    """A Hub that refuses connections (here: a closed local port) gives the same advice."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "cached", lambda *args, **kwargs: None)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(cu.CourseError, match="HF_ENDPOINT"):
        cu.resolve_model("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_local_models_dir_is_used(monkeypatch, tmp_path):
    folder = tmp_path / "stable-diffusion-v1-5" / "stable-diffusion-v1-5"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    monkeypatch.setenv("COURSE_MODELS_DIR", str(tmp_path))
    assert cu.resolve_model("stable-diffusion-v1-5/stable-diffusion-v1-5") == str(folder)


def test_tiny_pipeline_is_sd15_shaped(tiny_pipe):
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert isinstance(tiny_pipe, StableDiffusionPipeline)
    assert isinstance(tiny_pipe.unet, UNet2DConditionModel) and isinstance(tiny_pipe.vae, AutoencoderKL)
    assert isinstance(tiny_pipe.text_encoder, CLIPTextModel) and isinstance(tiny_pipe.tokenizer, CLIPTokenizer)
    assert isinstance(tiny_pipe.scheduler, PNDMScheduler)
    assert tiny_pipe.unet.config.in_channels == 4
    assert tiny_pipe.unet.config.cross_attention_dim == tiny_pipe.text_encoder.config.hidden_size
    # measured from the training data (1 / std of the latents), not SD 1.5's 0.18215
    assert 0.05 < tiny_pipe.vae.config.scaling_factor < 5 and tiny_pipe.vae.config.scaling_factor != 0.18215
    assert tiny_pipe.vae_scale_factor == 4 and tiny_pipe.vae.config.latent_channels == 4  # 64x64 -> 16x16x4
    assert tiny_pipe.text_encoder.config.vocab_size == 49408 and tiny_pipe.text_encoder.config.hidden_size == 64
    assert tiny_pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert (tiny_pipe.scheduler.config.beta_start, tiny_pipe.scheduler.config.beta_end) == (0.00085, 0.012)
    assert tiny_pipe.tokenizer.model_max_length == 77


def test_tokenizer_is_clips():
    from course_utils.models.builders import load_tokenizer

    ids = load_tokenizer()("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_tiny_is_reproducible(tiny_pipe):
    settings = dict(cu.default_settings("tiny"), num_inference_steps=3, output_type="np")
    a = tiny_pipe("a cat", generator=torch.Generator().manual_seed(1), **settings).images
    b = tiny_pipe("a cat", generator=torch.Generator().manual_seed(1), **settings).images
    c = tiny_pipe("a cat", generator=torch.Generator().manual_seed(2), **settings).images
    assert a.shape == (1, 64, 64, 3)
    assert (a == b).all() and not (a == c).all()


def test_prompts_and_settings():
    assert cu.prompt("main", "sd15") == "a photograph of an astronaut riding a horse"
    assert cu.default_settings("sd15")["height"] == 512
    with pytest.raises(cu.CourseError, match="No prompt"):
        cu.prompt("nope", "tiny")


def test_missing_tiny_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(tiny, "TINY_DIR", tmp_path / "tiny")
    with pytest.raises(cu.CourseError, match="python -m training all"):
        tiny.text2img_folder()


def test_the_reason_names_what_decided(monkeypatch):
    """A profile passed by the caller wins over COURSE_PROFILE, and the printed reason says so."""
    monkeypatch.setenv("COURSE_PROFILE", "tiny")
    choice = cu.choose("text2img", profile="sd15-random", device="cpu")
    assert choice.profile == "sd15-random"
    assert "profile= passed by the caller" in choice.reason and "COURSE_PROFILE=tiny does not apply" in choice.reason
    assert "COURSE_PROFILE=tiny" == cu.choose("text2img", device="cpu").reason
    monkeypatch.delenv("COURSE_PROFILE")
    assert cu.choose("text2img", profile="tiny", device="cpu").reason == "profile= passed by the caller"


def test_every_role_has_a_builder_per_profile():
    """The registry's one row per role: a pipeline class, a tiny and an sd15-random builder (the sd15 repo: hub)."""
    from diffusers import DiffusionPipeline

    for name, spec in registry.ROLES.items():
        assert issubclass(spec.pipeline, DiffusionPipeline), name
        assert hub.repo_id(name) == hub.SD15_REPOS[name] and callable(spec.tiny) and callable(spec.random), name
        assert spec.tiny_source().exists(), name


def test_repo_override(monkeypatch):
    assert hub.repo_id("upscale") == "stabilityai/stable-diffusion-x4-upscaler"
    monkeypatch.setenv("COURSE_HUB_UPSCALE", "someone/x4-upscaler-copy")
    assert (
        hub.repo_id("upscale") == "someone/x4-upscaler-copy" and hub.repo_id("text2img") == hub.SD15_REPOS["text2img"]
    )


def pipeline_folder(root, files, index=("unet", "vae")):
    """A pipeline folder: model_index.json naming ``index``, each a model (config.json), and ``files`` (empty)."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                **{n: ["diffusers", "X"] for n in index},
                "safety_checker": [None, None],
            }
        )
    )
    for name in index:
        (root / name).mkdir(exist_ok=True)
        (root / name / "config.json").write_text("{}")
    for f in files:
        (root / f).write_bytes(b"")
    return root


def test_folder_variant(tmp_path):
    folder = pipeline_folder(
        tmp_path / "a",
        ["unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"],
    )
    assert weights.folder_variant(folder, None) == "fp16"  # only fp16 files (a GPU's download): load those
    assert weights.folder_variant(folder, "fp16") == "fp16"
    for name in ("unet", "vae"):
        (folder / name / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert weights.folder_variant(folder, None) is None and weights.folder_variant(folder, "fp16") == "fp16"
    bins = pipeline_folder(tmp_path / "b", ["unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin"])
    assert weights.folder_variant(bins, "fp16") is None and weights.folder_variant(bins, None) is None


def test_folder_complete_finds_bin_only_and_refuses_missing_parts(tmp_path):
    bins = pipeline_folder(tmp_path / "bins", ["unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin"])
    assert weights.folder_complete(bins, None) and not weights.folder_complete(bins, "fp16")
    half = pipeline_folder(
        tmp_path / "half", ["unet/diffusion_pytorch_model.safetensors"]
    )  # the VAE's weights are missing
    assert not weights.folder_complete(half, None)
    (half / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert weights.folder_complete(half, None)
    shard_index = '{"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors", "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}'
    (half / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(shard_index)
    assert not weights.folder_complete(half, None)  # the index names shards that are not there
    assert not weights.folder_complete(tmp_path / "nothing", None)


SD15_FILES = [
    "model_index.json",
    "v1-5-pruned-emaonly.safetensors",
    "v1-5-pruned-emaonly.ckpt",
    "README.md",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "unet/config.json",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "text_encoder/config.json",
    "text_encoder/pytorch_model.bin",
    "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors",
]


def test_download_plan_follows_the_repositorys_own_files():
    files, variant = weights.download_plan(SD15_FILES, "fp16")
    assert variant == "fp16" and sorted(files) == sorted(
        [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "unet/config.json",
            "text_encoder/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/model.fp16.safetensors",
        ]
    )
    files, variant = weights.download_plan(
        SD15_FILES, None
    )  # the default weights, safetensors; never non_ema, never single files
    assert variant is None and {f for f in files if "/" in f and not f.endswith((".json", ".txt"))} == {
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    # an early-2023 conversion: pickles only, no fp16 -> the .bin files, default weights even when fp16 was wanted
    bins = [f for f in SD15_FILES if not f.endswith(".safetensors") and ".fp16." not in f]
    files, variant = weights.download_plan(bins, "fp16")
    assert variant is None and {"unet/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin"} <= set(files)
    assert "v1-5-pruned-emaonly.ckpt" not in files
    # safetensors for one part, .bin for the other: each part's best
    mixed = [f for f in bins if f != "text_encoder/pytorch_model.bin"] + ["text_encoder/model.safetensors"]
    files, _ = weights.download_plan(mixed, None)
    assert {"unet/diffusion_pytorch_model.bin", "text_encoder/model.safetensors"} <= set(files)
    # fp16 for one part only: one variant= must load the folder, so the default weights everywhere
    partial = [f for f in SD15_FILES if f != "text_encoder/model.fp16.safetensors"]
    assert weights.download_plan(partial, "fp16")[1] is None
    shards = [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
    ]
    assert sorted(weights.download_plan(shards, None)[0]) == sorted(shards)


def test_repo_ids_try_known_copies_in_order(monkeypatch):
    assert hub.repo_ids("upscale") == ["stabilityai/stable-diffusion-x4-upscaler", *hub.KNOWN_COPIES["upscale"]]
    assert hub.repo_ids("text2img") == [hub.SD15_REPOS["text2img"]]
    monkeypatch.setenv("COURSE_HUB_UPSCALE", " me/x4 , you/x4-copy ")
    assert hub.repo_ids("upscale") == ["me/x4", "you/x4-copy"] and hub.repo_id("upscale") == "me/x4"


def test_find_moves_on_when_missing_and_stops_when_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("COURSE_HUB_UPSCALE", "gone/x4,copy/x4")
    monkeypatch.setattr(hub, "local_source", lambda repo, variant=None: None)
    monkeypatch.setattr(hub, "_MISSING", set())

    def resolve(repo, **kw):
        if repo == "gone/x4":
            raise hub.RepoMissing(hub.missing_message(repo, role="upscale"))
        return f"/cache/{repo}"

    monkeypatch.setattr(hub, "resolve_model", resolve)
    said = []
    assert hub.find("upscale", say=said.append) == ("copy/x4", "/cache/copy/x4")
    assert [s.split(": ", 2)[2] for s in said] == [
        f"trying gone/x4 on {constants_endpoint()} (1 of 2)",
        "gone/x4 is missing there; trying the next known copy",
        f"trying copy/x4 on {constants_endpoint()} (2 of 2)",
    ]
    said.clear()
    assert hub.find("upscale", say=said.append)[0] == "copy/x4" and "gone/x4" not in " ".join(said)  # not asked again
    monkeypatch.setenv("COURSE_HUB_UPSCALE", "gone/x4,gone2/x4")
    monkeypatch.setattr(
        hub, "resolve_model", lambda repo, **kw: (_ for _ in ()).throw(hub.RepoMissing(hub.missing_message(repo)))
    )
    with pytest.raises(hub.RepoMissing, match="gone/x4, gone2/x4"):
        hub.find("upscale", say=said.append)
    calls = []

    def unreachable(repo, **kw):
        calls.append(repo)
        raise CourseError(hub.unreachable_message(repo))

    monkeypatch.setenv("COURSE_HUB_UPSCALE", "first/x4,second/x4")
    monkeypatch.setattr(hub, "resolve_model", unreachable)
    with pytest.raises(CourseError, match="not reachable"):
        hub.find("upscale", say=said.append)
    assert calls == ["first/x4"]  # an unreachable Hub has no copy either


def constants_endpoint():
    from huggingface_hub import constants

    return constants.ENDPOINT


@pytest.mark.parametrize("what", ["missing", "unreachable"])
def test_a_gpu_that_falls_back_to_tiny_shows_a_banner(monkeypatch, capsys, what):
    """On a CUDA machine the fallback to tiny is a banner: what is missing, why, the three ways out; once per process."""
    import course_utils as cu

    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(registry, "get_device", lambda: "cuda")
    monkeypatch.setattr(registry, "describe_device", lambda device: "cuda (a GPU, pretended)")  # no CUDA in this torch
    monkeypatch.setattr(registry, "_BANNERS_SHOWN", set())
    error = (
        hub.RepoMissing(hub.missing_message("gone/sd15", role="text2img"))
        if what == "missing"
        else CourseError(hub.unreachable_message("gone/sd15"))
    )
    monkeypatch.setattr(hub, "find", lambda *a, **kw: (_ for _ in ()).throw(error))
    choice = cu.setup()
    out = capsys.readouterr().out
    assert choice.profile == "tiny" and choice.device == "cuda"
    assert "This machine has a CUDA GPU, but this lesson runs the small offline teaching model `tiny`" in out
    assert f"Missing: the `text2img` model ({hub.SD15_REPOS['text2img']})" in out
    assert ("no such repository" if what == "missing" else "cannot be reached") in out
    for way in ("COURSE_HUB_TEXT2IMG", "HF_ENDPOINT", "COURSE_MODELS_DIR", "COURSE_PROFILE=tiny"):
        assert way in out, way
    assert out.index("!!!!") < out.index("course_utils: profile=tiny")  # the banner comes before the one-line choice
    registry.choose()
    assert "!!!!" not in capsys.readouterr().out  # once per process


def test_missing_and_unreachable_are_told_apart():
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    not_found = RepositoryNotFoundError.__new__(
        RepositoryNotFoundError
    )  # as raised for a 401/404 (it wants a response)
    Exception.__init__(not_found, "404 Client Error: Repository Not Found")
    missing = hub.course_error("nobody/nothing", not_found, role="upscale")
    assert (
        isinstance(missing, hub.RepoMissing)
        and "nobody/nothing" in str(missing)
        and "COURSE_HUB_UPSCALE" in str(missing)
    )
    assert "not reachable" not in str(missing)
    offline = hub.course_error("nobody/nothing", LocalEntryNotFoundError("not cached"))
    refused = hub.course_error("nobody/nothing", ConnectionRefusedError("refused"))
    for err in (offline, refused):
        assert not isinstance(err, hub.RepoMissing) and "not reachable" in str(err) and "HF_ENDPOINT" in str(err)


def test_course_settings_override(monkeypatch):
    monkeypatch.setenv("COURSE_SETTINGS", "height=64, width=64,num_inference_steps=10,guidance_scale=2")
    assert cu.default_settings("sd15") == dict(height=64, width=64, num_inference_steps=10, guidance_scale=2.0)
    monkeypatch.setenv("COURSE_SETTINGS", "steps=10")
    with pytest.raises(cu.CourseError, match="unknown setting 'steps'"):
        cu.default_settings("tiny")
    monkeypatch.setenv("COURSE_SETTINGS", "height=big")
    with pytest.raises(cu.CourseError, match="not a number"):
        cu.default_settings("tiny")
