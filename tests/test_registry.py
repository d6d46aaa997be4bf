import pytest
import torch

import course_utils as cu
from course_utils.models import hub, registry, tiny


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
    for needle in ("HF_ENDPOINT", "COURSE_MODELS_DIR", "COURSE_PROFILE=tiny", "stable-diffusion-v1-5/stable-diffusion-v1-5"):
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


def test_repo_override_and_weight_patterns(monkeypatch):
    assert hub.repo_id("upscale") == "stabilityai/stable-diffusion-x4-upscaler"
    monkeypatch.setenv("COURSE_HUB_UPSCALE", "someone/x4-upscaler-copy")
    assert hub.repo_id("upscale") == "someone/x4-upscaler-copy" and hub.repo_id("text2img") == hub.SD15_REPOS["text2img"]
    allow, ignore = hub.weight_patterns("fp16")
    assert "*/*.fp16.safetensors" in allow and not ignore
    allow, ignore = hub.weight_patterns(None)
    assert "*/*.safetensors" in allow and ignore == ["*/*.fp16.safetensors", "*/*.non_ema.safetensors"]


def test_folder_variant(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert hub.folder_variant(tmp_path, None) == "fp16"  # only fp16 files (a GPU's download): load those
    assert hub.folder_variant(tmp_path, "fp16") == "fp16"
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert hub.folder_variant(tmp_path, None) is None and hub.folder_variant(tmp_path, "fp16") == "fp16"


def test_missing_and_unreachable_are_told_apart():
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    not_found = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # as raised for a 401/404 (it wants a response)
    Exception.__init__(not_found, "404 Client Error: Repository Not Found")
    missing = hub.course_error("nobody/nothing", not_found, role="upscale")
    assert isinstance(missing, hub.RepoMissing) and "nobody/nothing" in str(missing) and "COURSE_HUB_UPSCALE" in str(missing)
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
