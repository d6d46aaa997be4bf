"""Half precision the way diffusers' training scripts do it (course_utils.precision), on `tiny` in float16 on the CPU.

The bug this guards against: peft gives a LoRA the dtype of its base layer, so on a GPU (float16) AdamW steps float16
weights; its eps (1e-8) is 0 in float16 and a LoRA's A has a zero first gradient (B starts at 0): 0 / 0 = NaN.
"""

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import cast_training_params
from peft import LoraConfig

import course_utils as cu
from course_utils import new_concept, precision
from course_utils.models import builders


@pytest.fixture(scope="module")
def scenes():
    return new_concept.concept_scenes("diamond", 4) + new_concept.prior_scenes(4)


def _lora_unet(dtype: torch.dtype, recipe: bool):
    unet = builders.tiny_text2img(dtype=dtype).unet
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=list(new_concept.LORA_TARGETS))
    )
    if recipe:
        cast_training_params(unet, dtype=torch.float32)
    return unet


def _train(unet, data, steps: int, recipe: bool) -> list[float]:
    scheduler = DDPMScheduler.from_config(builders.tiny_text2img().scheduler.config)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scaler = precision.grad_scaler("cpu", unet.dtype if recipe else torch.float32)
    gen, losses = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        index = torch.arange(len(data["mean"]))
        x_0 = new_concept.sample_latents(data, index, 0.34, gen)
        with precision.autocast("cpu", unet.dtype if recipe else torch.float32):
            loss = new_concept.training_loss(unet, scheduler, x_0, data["text"][index], gen)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        precision.optimizer_step(optimizer, scaler, params, 1.0)
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_float16_lora_weights_turn_nan_and_the_recipe_does_not(scenes):
    pipe = builders.tiny_text2img()
    data = new_concept.encode_dataset(pipe, [s.image for s in scenes], [s.caption for s in scenes])
    naive = _lora_unet(torch.float16, recipe=False)
    assert {p.dtype for p in naive.parameters() if p.requires_grad} == {torch.float16}  # peft's choice
    _train(naive, data, steps=1, recipe=False)
    assert any(p.isnan().any() for p in naive.parameters() if p.requires_grad), "AdamW on float16 weights: NaN"

    unet = _lora_unet(torch.float16, recipe=True)
    trained = [p for p in unet.parameters() if p.requires_grad]
    assert {p.dtype for p in trained} == {torch.float32}
    assert {p.dtype for p in unet.parameters() if not p.requires_grad} == {torch.float16}
    losses = _train(unet, data, steps=3, recipe=True)
    assert all(torch.isfinite(torch.tensor(losses))) and all(torch.isfinite(p).all() for p in trained)
    assert any((p != 0).any() for name, p in unet.named_parameters() if "lora_B" in name)  # it did train


def test_helpers_change_nothing_in_float32():
    with precision.autocast("cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast("cpu", torch.float16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
    assert not precision.grad_scaler("cpu", torch.float32).is_enabled()
    assert not precision.grad_scaler("cpu", torch.bfloat16).is_enabled()  # bfloat16 has float32's range
    scaler = precision.grad_scaler("cpu", torch.float16)
    assert scaler.is_enabled() and scaler.get_scale() == precision.INITIAL_LOSS_SCALE


def test_training_loss_noises_in_float32_whatever_the_unet(scenes):
    """x_t is made from float32 latents and noise (add_noise rounds a_bar to the sample's dtype), then cast."""
    pipe = builders.tiny_text2img(dtype=torch.float16)
    data = new_concept.encode_dataset(pipe, [s.image for s in scenes], [s.caption for s in scenes])
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(3)
    x_0 = new_concept.sample_latents(data, torch.arange(4), pipe.vae.config.scaling_factor, gen)
    state = gen.get_state()
    with torch.no_grad():
        loss = new_concept.training_loss(pipe.unet, scheduler, x_0, data["text"][:4], gen)
        g = torch.Generator().set_state(state)
        eps = torch.randn(x_0.shape, generator=g) + new_concept.NOISE_OFFSET * torch.randn((4, 4, 1, 1), generator=g)
        t = torch.randint(0, 1000, (4,), generator=g)
        x_t = scheduler.add_noise(x_0, eps, t)  # float32
        by_hand = torch.nn.functional.mse_loss(pipe.unet(x_t.half(), t, data["text"][:4].half()).sample.float(), eps)
    assert loss.dtype == torch.float32 and loss.item() == by_hand.item()


@pytest.mark.slow
def test_textual_inversion_in_float16_is_finite_and_accumulates_like_one_batch():
    from test_text_embeddings import _purple_triangles

    te = cu.text_embeddings
    for dtype in (torch.float32, torch.float16):
        pipe = builders.tiny_text2img(dtype=dtype)
        token = "<my-shape>"
        te.add_token(
            pipe.tokenizer, pipe.text_encoder, token, te.word_vector(pipe.tokenizer, pipe.text_encoder, "shape")
        )
        images, captions = _purple_triangles(4, token)
        whole, losses = te.train_textual_inversion(pipe, images, captions, token, steps=2)
        parts, part_losses = te.train_textual_inversion(
            pipe, images, captions, token, steps=2, batch_size=1, gradient_checkpointing=True
        )
        assert all(torch.isfinite(torch.tensor(losses + part_losses))) and torch.isfinite(parts.float()).all()
        assert not pipe.unet.is_gradient_checkpointing  # switched back off
        # 4 passes of 1 add up to the batch of 4 (float32: to rounding; float16: to its last digits)
        assert (whole.float() - parts.float()).abs().max() <= cu.by_hand.tolerance(dtype, whole.float())
        assert abs(losses[0] - part_losses[0]) <= cu.by_hand.tolerance(dtype)
