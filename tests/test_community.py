"""Single-file checkpoints, the refusal of pickled ``.ckpt`` files, textual inversion and LoRA on `tiny`."""

import warnings

import pytest
import torch
from safetensors.torch import load_file

import course_utils as cu
from course_utils import community
from course_utils import single_file as sf
from course_utils.models import builders, configs, files, hub, original_layout, tiny

COMPONENTS = ("unet", "vae", "text_encoder")


def _assert_same_weights(a, b):
    for name in COMPONENTS:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key}"


@pytest.fixture
def fresh_community():
    """A new `tiny` community pipeline (textual inversion and LoRA change the pipeline they load into)."""
    return builders.tiny_community()


def test_round_trip_save_then_from_single_file(tiny_pipe, tmp_path):
    path = sf.save_single_file(tiny_pipe, tmp_path / "tiny.safetensors")
    loaded = sf.load_single_file(path, config=tiny.text2img_folder())
    _assert_same_weights(tiny_pipe, loaded)
    assert loaded.vae.config.scaling_factor == tiny_pipe.vae.config.scaling_factor


def test_key_layout_is_the_original_one(tiny_pipe):
    state = sf.to_original_state_dict(tiny_pipe)
    groups = sf.group_keys(state)
    assert set(groups) == {"model.diffusion_model", "first_stage_model", "cond_stage_model.transformer"}
    assert len(state) == sum(len(getattr(tiny_pipe, c).state_dict()) for c in COMPONENTS)
    assert torch.equal(state["model.diffusion_model.input_blocks.0.0.weight"], tiny_pipe.unet.conv_in.weight)
    assert torch.equal(
        state["model.diffusion_model.time_embed.0.weight"], tiny_pipe.unet.time_embedding.linear_1.weight
    )
    assert torch.equal(state["model.diffusion_model.out.2.weight"], tiny_pipe.unet.conv_out.weight)
    # The VAE attention is stored as 1x1 convolutions in the original layout.
    q = state["first_stage_model.encoder.mid.attn_1.q.weight"]
    assert q.ndim == 4 and q.shape[2:] == (1, 1)
    # The original decoder counts up blocks from the bottom: up.0 runs last, at full resolution.
    assert (
        state["first_stage_model.decoder.up.0.block.0.conv1.weight"].shape[0]
        == configs.TINY_VAE["block_out_channels"][0]
    )
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in state
    mapping = sf.key_mapping(tiny_pipe)
    assert (
        mapping["model.diffusion_model.input_blocks.1.0.in_layers.0.weight"]
        == "unet.down_blocks.0.resnets.0.norm1.weight"
    )


def test_sd15_sized_layout_matches_diffusers_converter():
    """The inverse mapping is derived from the config: check it on SD 1.5's full size (meta tensors, no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**configs.SD15_UNET), AutoencoderKL(**configs.SD15_VAE)
    unet_map, vae_map = sf.unet_prefix_map(unet.config), sf.vae_prefix_map(vae.config)
    original = {sf.UNET_PREFIX + original_layout._rename(k, unet_map): v for k, v in unet.state_dict().items()}
    # The key diffusers uses to detect SD 1.x, and the upsamplers after (2, 5) or without (8) attention:
    for key in (
        "output_blocks.11.0.skip_connection.weight",
        "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight",
    ):
        assert sf.UNET_PREFIX + key in original
    assert set(convert_ldm_unet_checkpoint(original, dict(unet.config))) == set(unet.state_dict())
    original_vae = {sf.VAE_PREFIX + original_layout._rename(k, vae_map): v for k, v in vae.state_dict().items()}
    assert set(convert_ldm_vae_checkpoint(original_vae, dict(vae.config))) == set(vae.state_dict())


def test_pickled_ckpt_is_refused_unless_opted_in(tmp_path):
    weights = load_file(tiny.community_file())
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": weights}, ckpt)
    config = tiny.text2img_folder()
    with pytest.raises(cu.CourseError) as info:
        sf.load_single_file(ckpt, config=config)
    message = str(info.value)
    for needle in ("pickle", "code", ".safetensors", "allow_pickle=True", "weights_only=True"):
        assert needle in message
    loaded = sf.load_single_file(ckpt, config=config, allow_pickle=True)
    assert torch.equal(loaded.unet.conv_in.weight, weights["model.diffusion_model.input_blocks.0.0.weight"])


class _Payload:
    """Pickles into 'call print(...)': the smallest harmless example of code inside a checkpoint."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_weights_only_refuses_a_ckpt_that_carries_code(tmp_path, capsys):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": load_file(tiny.community_file()), "payload": _Payload()}, evil)
    with pytest.raises(cu.CourseError, match="weights_only=True"):
        sf.load_single_file(evil, config=tiny.text2img_folder(), allow_pickle=True)
    assert "this ran while loading" not in capsys.readouterr().out


def test_missing_file_and_wrong_suffix(tmp_path, tiny_pipe):
    with pytest.raises(cu.CourseError, match="No checkpoint file"):
        sf.load_single_file(tmp_path / "nothing.safetensors", config=tiny.text2img_folder())
    with pytest.raises(cu.CourseError, match=".safetensors"):
        sf.save_single_file(tiny_pipe, tmp_path / "model.ckpt")


def test_without_config_diffusers_infers_the_type_and_fetches_configs(monkeypatch):
    """``config`` is optional: without it nothing is passed, so diffusers guesses the type and fetches its configs."""
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import fetch_diffusers_config, infer_diffusers_model_type

    seen = {}
    monkeypatch.setattr(
        StableDiffusionPipeline, "from_single_file", classmethod(lambda cls, name, **kw: seen.update(kw) or "pipe")
    )
    assert sf.load_single_file(tiny.community_file()) == "pipe"
    assert "config" not in seen and seen["local_files_only"] is False
    sf.load_single_file(tiny.community_file(), config=tiny.text2img_folder())
    assert seen["config"] == str(tiny.text2img_folder()) and seen["local_files_only"] is True
    # lesson 07, step 2: the tiny file's keys look like SD 1.5's, so diffusers would fetch SD 1.5's configs (too big for it)
    shapes = {
        k: torch.empty(v["shape"], device="meta")
        for k, v in sf.read_header(tiny.community_file()).items()
        if k != "__metadata__"
    }
    assert infer_diffusers_model_type(shapes) == "v1"
    assert fetch_diffusers_config(shapes)["pretrained_model_name_or_path"] == hub.SD15_REPOS["text2img"]


def test_textual_inversion_adds_tokens_and_vectors(fresh_community):
    """The A1111 file format, bound to a mixed-case token as lesson 07 does with EasyNegative on `sd15`."""
    pipe, token = fresh_community, files.EASYNEGATIVE_TOKEN
    vectors = community.embedding_vectors(tiny.embedding_file())
    assert vectors.ndim == 2 and vectors.shape[1] == configs.TINY_TEXT_ENCODER["hidden_size"]
    before = pipe.tokenizer(token).input_ids
    assert len(before) > 3 and max(before[1:-1]) < 49406  # ordinary sub-word pieces between <start> and <end>
    pipe.load_textual_inversion(str(tiny.embedding_file()), token=token)
    names = [token] + [f"{token}_{i}" for i in range(1, len(vectors))]
    ids = pipe.tokenizer.convert_tokens_to_ids(names)
    assert ids == list(range(49408, 49408 + len(vectors)))
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids], vectors.float())
    expanded = "blurry, " + " ".join(names)
    assert pipe.tokenizer(expanded).input_ids[1:-1][-len(ids) :] == ids
    # transformers 5's CLIP tokenizer lower-cases what tokenize() returns, so diffusers' multi-vector
    # expansion misses a mixed-case token: lesson 07 writes the names out itself. If this starts
    # failing, diffusers expands it again and the lesson can go back to plain "EasyNegative".
    if len(vectors) > 1:
        assert pipe.maybe_convert_prompt(f"blurry, {token}", pipe.tokenizer) == f"blurry, {token}"


def test_tiny_embedding_token_expands(fresh_community):
    """tiny's own token, lower-case, is expanded by the pipeline into all its vectors."""
    pipe, token = fresh_community, files.embedding_token("tiny")
    assert token == tiny.EMBEDDING_TOKEN
    vectors = community.embedding_vectors(files.embedding_file("tiny"))
    pipe.load_textual_inversion(str(files.embedding_file("tiny")), token=token)
    names = [token] + [f"{token}_{i}" for i in range(1, len(vectors))]
    assert (
        pipe.maybe_convert_prompt(f"a red circle in {token} style", pipe.tokenizer)
        == f"a red circle in {' '.join(names)} style"
    )


def _unet_out(pipe):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    text = torch.randn(1, 77, configs.TINY_TEXT_ENCODER["hidden_size"], generator=generator)
    with torch.no_grad():
        return pipe.unet(latents, 500, encoder_hidden_states=text).sample


def test_lora_scale_zero_is_no_lora_and_one_differs(fresh_community):
    pipe = fresh_community
    base = _unet_out(pipe)
    pipe.load_lora_weights(files.lora_source("tiny"), adapter_name="demo")
    assert pipe.get_list_adapters() == {"unet": ["demo"]}
    pipe.set_adapters(["demo"], adapter_weights=[0.0])
    assert torch.equal(_unet_out(pipe), base)
    pipe.set_adapters(["demo"], adapter_weights=[1.0])
    full = _unet_out(pipe)
    assert (full - base).abs().mean() > 1e-3
    pipe.set_adapters(["demo"], adapter_weights=[0.5])
    half = _unet_out(pipe)
    assert 0 < (half - base).abs().mean() < (full - base).abs().mean()
    pipe.unload_lora_weights()
    assert torch.equal(_unet_out(pipe), base)


def test_load_pipeline_community_offline_without_warnings(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.filterwarnings(
            "error", category=DeprecationWarning, module=r"(diffusers|transformers|huggingface_hub|peft)"
        )
        pipe = cu.load_pipeline("community", profile="tiny", device="cpu")
        pipe.load_lora_weights(files.lora_source("tiny"), adapter_name="demo")
        pipe.set_adapters(["demo"], adapter_weights=[0.5])
        pipe.load_textual_inversion(str(tiny.embedding_file()), token=files.EASYNEGATIVE_TOKEN)
    weights = load_file(tiny.community_file())
    assert torch.equal(pipe.unet.conv_out.weight, weights["model.diffusion_model.out.2.weight"].float())
    base = builders.tiny_text2img()
    assert not torch.equal(pipe.unet.conv_in.weight, base.unet.conv_in.weight)  # the fine-tune changed the UNet
    assert torch.equal(pipe.vae.encoder.conv_in.weight, base.vae.encoder.conv_in.weight)  # ... and nothing else


def test_sd15_sources_offline_give_a_clear_error(monkeypatch, tmp_path):
    """With an empty Hub cache and HF_HUB_OFFLINE, lesson 07's sd15 files are a CourseError that names the repo."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COURSE_MODELS_DIR", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(cu.CourseError) as info:
        files.embedding_file("sd15")
    assert "gsdf/EasyNegative" in str(info.value) and "COURSE_PROFILE=tiny" in str(info.value)
    with pytest.raises(cu.CourseError, match="gsdf/Counterfeit-V2.5"):
        files.checkpoint_file("sd15")
    with pytest.raises(cu.CourseError, match="sayakpaul/civitai-light-shadow-lora"):
        files.lora_source("sd15")


def test_sd15_sources_from_course_models_dir(monkeypatch, tmp_path):
    """Files copied into COURSE_MODELS_DIR/<repo id>/ are used before the Hub."""
    for repo, name in ((hub.EASYNEGATIVE_REPO, hub.EASYNEGATIVE_FILE), (hub.STYLE_LORA_REPO, hub.STYLE_LORA_FILE)):
        (tmp_path / repo).mkdir(parents=True)
        (tmp_path / repo / name).write_bytes(b"")
    monkeypatch.setenv("COURSE_MODELS_DIR", str(tmp_path))
    assert files.embedding_file("sd15") == tmp_path / hub.EASYNEGATIVE_REPO / hub.EASYNEGATIVE_FILE
    assert files.lora_source("sd15") == str(tmp_path / hub.STYLE_LORA_REPO)
