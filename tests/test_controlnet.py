"""Lesson 11's mechanism against diffusers: the edge maps, a fresh ControlNet adds exactly nothing, the loop written out
(course_utils.controlnet.denoise) equals StableDiffusionControlNetPipeline for every knob, scale 0 is the base model;
the registry role, the Hub files and the scorer."""

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image

from course_utils import by_hand, controlnet, edges, scores, world
from course_utils.errors import CourseError
from course_utils.models import builders, configs, files, hub, lookalike_parts, registry, tiny

SETTINGS = dict(height=64, width=64, num_inference_steps=6, guidance_scale=3.0)


@pytest.fixture(scope="module")
def base():
    pipe = builders.tiny_text2img()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def random_pipe(base):
    """tiny's text-to-image model with a ControlNet whose zero convolutions are random: residuals of every size."""
    cn = lookalike_parts.random_controlnet(lookalike_parts.architecture("small"), seed=3)
    pipe = StableDiffusionControlNetPipeline.from_pipe(base, controlnet=cn)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latents_of(pipe, **kw):
    return pipe(generator=torch.Generator().manual_seed(0), output_type="latent", **SETTINGS, **kw).images


def scene():
    return world.sample(7, "train")


def test_canny_is_white_edges_on_black_in_three_equal_channels_at_the_pictures_size():
    picture = scene().image
    found = edges.canny(picture)
    x = np.asarray(found)
    assert found.mode == "RGB" and found.size == picture.size
    assert set(np.unique(x)) == {0, 255} and (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()
    assert 0.01 < (x[..., 0] == 255).mean() < 0.1  # an outline, not a fill
    assert edges.canny_batch([picture, picture]).shape == (2, 64, 64)
    with pytest.raises(TypeError, match="PIL image"):
        edges.canny(x)
    with pytest.raises(ValueError, match="low <= high"):
        edges.canny(picture, 200, 100)


def test_every_colour_on_every_background_has_edges():
    for color in world.COLORS:
        for background in world.BACKGROUNDS:
            if background != color:
                x = np.asarray(edges.canny(world.draw(color, "circle", background, 32, 32, 12)))
                assert (x == 255).any(), (color, background)


def test_a_fresh_controlnet_is_a_copy_whose_residuals_are_exactly_zero(base):
    fresh = ControlNetModel.from_unet(base.unet, conditioning_embedding_out_channels=configs.TINY_CONTROLNET_EMBEDDING)
    parts = controlnet.copied_parts(base.unet, fresh)
    assert {"conv_in", "time_embedding", "down_blocks", "mid_block"} <= set(parts["copied"])
    assert set(parts["new"]) == {"controlnet_cond_embedding", "controlnet_down_blocks", "controlnet_mid_block"}
    assert parts["parameters"]["copied"] + parts["parameters"]["new"] == sum(p.numel() for p in fresh.parameters())
    pipe = StableDiffusionControlNetPipeline.from_pipe(base, controlnet=fresh)
    x = torch.randn(1, 4, 16, 16)
    text = torch.randn(1, 77, configs.TINY_TEXT_ENCODER["hidden_size"])
    condition = controlnet.condition_tensor(pipe, edges.canny(scene().image), 64, 64)
    assert condition.shape == (1, 3, 64, 64) and condition.min() == 0 and condition.max() == 1
    with torch.no_grad():
        down, mid = controlnet.residuals(fresh, x, torch.tensor(500), text, condition)
    skips = 1 + sum(
        len(b.resnets) + bool(b.downsamplers) for b in base.unet.down_blocks
    )  # conv_in, layers, downsamplers
    assert len(down) == skips and [r.shape[1] for r in down][0] == base.unet.config.block_out_channels[0]
    assert all(not r.any() for r in (*down, mid))
    # the pipeline with it draws the base model's picture, bit for bit
    assert torch.equal(
        latents_of(pipe, prompt="a red circle", image=edges.canny(scene().image)),
        latents_of(base, prompt="a red circle"),
    )


def test_scale_zero_is_the_base_model_and_scale_one_is_not(base, random_pipe):
    condition = edges.canny(scene().image)
    zero = latents_of(random_pipe, prompt="a red circle", image=condition, controlnet_conditioning_scale=0.0)
    assert torch.equal(zero, latents_of(base, prompt="a red circle"))
    assert not torch.equal(zero, latents_of(random_pipe, prompt="a red circle", image=condition))


@pytest.mark.parametrize(
    "scale, start, end, guess, guidance",
    [(1.0, 0.0, 1.0, False, 3.0), (0.5, 0.2, 0.8, False, 3.0), (1.0, 0.0, 1.0, True, 3.0), (0.8, 0.0, 0.5, False, 1.0)],
)
def test_the_loop_written_out_equals_the_pipeline(random_pipe, scale, start, end, guess, guidance):
    pipe, condition = random_pipe, edges.canny(scene().image)
    settings = dict(SETTINGS, guidance_scale=guidance)
    expected = pipe(
        "a blue square",
        image=condition,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        controlnet_conditioning_scale=scale,
        control_guidance_start=start,
        control_guidance_end=end,
        guess_mode=guess,
        **settings,
    ).images
    cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "a blue square")
    uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
    pipe.scheduler.set_timesteps(settings["num_inference_steps"])
    x_T = by_hand.initial_latents(
        1,
        pipe.unet,
        pipe.scheduler,
        64,
        64,
        torch.Generator().manual_seed(0),
        "cpu",
        torch.float32,
        vae_scale_factor=pipe.vae_scale_factor,
    )
    with torch.no_grad():
        mine = controlnet.denoise(
            pipe.unet,
            pipe.controlnet,
            pipe.scheduler,
            x_T,
            cond,
            uncond,
            guidance,
            controlnet.condition_tensor(pipe, condition, 64, 64),
            scale,
            start,
            end,
            guess,
        )
    assert (mine - expected).abs().max().item() <= by_hand.tolerance(torch.float32)


def test_keep_is_the_pipelines_window():
    n = 10
    assert [controlnet.keep(i, n) for i in range(n)] == [1.0] * n
    assert [controlnet.keep(i, n, 0.0, 0.3) for i in range(n)] == [1.0] * 3 + [0.0] * 7
    assert [controlnet.keep(i, n, 0.6, 1.0) for i in range(n)] == [0.0] * 6 + [1.0] * 4


def test_control_scores_reads_scenes_back(base):
    held = scores.control_scenes(per_shape=1)
    assert [s.shape for s in held] == list(world.SHAPES)
    assert scores.scene_prompt(held[0]).startswith(f"{world.article(held[0].color)} {held[0].color} circle on ")
    assert scores.overlap(held[0].image, held[0].image) == 1.0
    found = scores.control_scores(base, held, **SETTINGS)
    assert found["pictures"] == 3 and set(found) >= {"follows", "mean_iou", "color", "shape", "background"}


def test_the_lessons_training_examples_and_steps(monkeypatch):
    photo = Image.new("RGB", (64, 64), "blue")
    assert controlnet.training_examples("sd15", photo, "a photo", n=9) == [(photo, "a photo")]
    examples = controlnet.training_examples("tiny", photo, "a photo", n=5)
    assert len(examples) == 5 and examples[0][0].size == (64, 64)
    monkeypatch.delenv("COURSE_TRAIN_STEPS", raising=False)
    assert controlnet.training_steps("tiny", "cpu") == 60 and controlnet.training_steps("sd15", "cuda") == 20
    monkeypatch.setenv("COURSE_TRAIN_STEPS", "3")
    assert controlnet.training_steps("tiny", "cpu") == 3


def test_the_registry_role_loads_tinys_trained_controlnet():
    pipe = registry.load_pipeline("controlnet", profile="tiny", device="cpu")
    assert isinstance(pipe, StableDiffusionControlNetPipeline) and pipe.controlnet.dtype == torch.float32
    assert tuple(pipe.controlnet.config.conditioning_embedding_out_channels) == configs.TINY_CONTROLNET_EMBEDDING
    assert registry.model_source("controlnet", profile="tiny") == str(tiny.controlnet_folder())
    assert any(z.weight.abs().sum() > 0 for z in pipe.controlnet.controlnet_down_blocks)  # trained: no longer zero
    record = controlnet.training_record()
    assert len(record["eval_steps"]) == len(record["follows"]) >= 4 and len(record["loss"]) == len(record["loss_steps"])


def test_the_sd15_controlnet_files_come_from_one_folder_fp16_first(tmp_path, monkeypatch):
    folder = tmp_path / hub.CONTROLNET_REPO
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("COURSE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (folder / hub.CONTROLNET_FILES["fp16"]).write_bytes(b"")
    assert files.controlnet_source("fp16") == (str(folder), "fp16")
    assert files.controlnet_source(None) == (str(folder), "fp16")  # only the GPU's file here: load it and upcast
    (folder / hub.CONTROLNET_FILES[None]).write_bytes(b"")
    assert files.controlnet_source(None) == (str(folder), None)
    assert (
        "lllyasviel/control_v11p_sd15_canny",
        hub.CONTROLNET_FILES["fp16"],
        "model",
        "controlnet",
    ) in hub.SINGLE_FILES
    (folder / "config.json").unlink()  # weights but no config, offline: the course's error, no traceback
    with pytest.raises(CourseError):
        files.controlnet_source("fp16")


def test_sd15s_controlnet_shape_and_size_without_building_it():
    """What lesson 11 downloads on sd15: ControlNetModel.from_unet of SD 1.5's UNet has 361,279,120 parameters
    (tools/publish.py's download size, 2 bytes each in fp16) and ControlNetModel's default condition embedding."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        full = ControlNetModel.from_unet(UNet2DConditionModel(**configs.SD15_UNET), load_weights_from_unet=False)
    assert tuple(full.config.conditioning_embedding_out_channels) == configs.SD15_CONTROLNET_EMBEDDING
    assert sum(p.numel() for p in full.parameters()) == 361_279_120
