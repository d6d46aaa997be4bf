"""course_utils.new_concept (lesson 10) against diffusers and the world's ground truth."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

import course_utils as cu
from course_utils import latents, new_concept, world


@pytest.fixture(scope="module")
def pipe():
    p = cu.load_pipeline("text2img", profile="tiny", device="cpu")
    p.set_progress_bar_config(disable=True)
    return p


def test_scenes_new_shape_and_prior():
    concept = new_concept.concept_scenes("diamond", 6, seed=3)
    assert [s.shape for s in concept] == ["diamond"] * 6 and all("diamond" in s.caption for s in concept)
    assert concept[0].caption == world.sample(3, shape="diamond").caption
    prior = new_concept.prior_scenes(30)
    assert {s.shape for s in prior} <= set(world.SHAPES) and prior[0].caption == world.sample(
        new_concept.PRIOR_SEED
    ).caption


def test_photo_crops_are_squares_of_the_asked_size():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8))
    crops = new_concept.photo_crops(photo, 3, 32, seed=1)
    assert [c.size for c in crops] == [(32, 32)] * 3 and crops[0].mode == "RGB"
    assert not np.array_equal(np.asarray(crops[0]), np.asarray(crops[1]))


def test_encode_dataset_and_training_loss_match_diffusers(pipe):
    scenes = new_concept.concept_scenes("diamond", 3) + new_concept.prior_scenes(2)
    data = new_concept.encode_dataset(pipe, [s.image for s in scenes], [s.caption for s in scenes], batch_size=2)
    assert (
        data["mean"].shape == (5, 4, 16, 16)
        and data["std"].shape == (5, 4, 16, 16)
        and data["text"].shape == (5, 77, 64)
    )
    with torch.no_grad():
        ids = cu.text_embeddings.token_ids(pipe.tokenizer, scenes[4].caption)
        assert torch.allclose(data["text"][4], pipe.text_encoder(ids)[0][0], atol=1e-5)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    index = torch.tensor([0, 3, 4])
    gen = torch.Generator().manual_seed(5)
    x_0 = new_concept.sample_latents(data, index, pipe.vae.config.scaling_factor, gen)
    state = gen.get_state()
    with torch.no_grad():
        loss = new_concept.training_loss(pipe.unet, scheduler, x_0, data["text"][index], gen, noise_offset=0.2)
        # by hand, with the same draws: noise, offset, timesteps
        g = torch.Generator().set_state(state)
        eps = torch.randn(x_0.shape, generator=g) + 0.2 * torch.randn((3, 4, 1, 1), generator=g)
        t = torch.randint(0, 1000, (3,), generator=g)
        a_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a_bar.sqrt() * x_0 + (1 - a_bar).sqrt() * eps
        by_hand = ((pipe.unet(x_t, t, data["text"][index]).sample - eps) ** 2).mean()
    assert abs(loss.item() - by_hand.item()) < 1e-6


def test_the_latent_cache_draws_what_the_vae_samples(pipe):
    """Encoding once (``latents.encode``) and drawing at each step (``latents.draw``, lesson 10's ``sample_latents``)
    gives, bit for bit, what encoding and sampling every step would: the VAE's sample is ``mean + std * randn``."""
    pixels = cu.to_tensor([s.image for s in new_concept.concept_scenes("diamond", 4)])
    cache, sf = latents.encode(pipe.vae, pixels), pipe.vae.config.scaling_factor
    assert cache["mean"].dtype == cache["std"].dtype == torch.float32 and cache["mean"].shape == (4, 4, 16, 16)
    drawn = latents.draw(cache, torch.arange(4), sf, torch.Generator().manual_seed(3))
    with torch.no_grad():
        sampled = pipe.vae.encode(pixels).latent_dist.sample(torch.Generator().manual_seed(3)) * sf
    assert torch.equal(drawn, sampled)
    index, a, b = torch.tensor([3, 0, 3]), torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    x_0 = new_concept.sample_latents(cache, index, sf, a)
    assert torch.equal(x_0, latents.draw(cache, index, sf, b))
    assert not torch.equal(x_0[0], x_0[2])  # the same image twice: two draws
    assert torch.equal(a.get_state(), b.get_state())


def test_share_drawn_counts_what_classify_reads(pipe):
    class Rendered:  # a stand-in pipeline that "draws" rendered ground truth: 3 diamonds, 1 square
        def __call__(self, prompts, generator, **settings):
            images = [world.sample(i, shape="diamond").image for i in range(3)] + [
                world.sample(0, shape="square").image
            ]
            return type("Out", (), {"images": images[: len(prompts)]})

    share, images, found = new_concept.share_drawn(Rendered(), "diamond", ["a"] * 4)
    assert share == 0.75 and len(images) == 4 and found[3]["shape"] == "square"
    prompts = new_concept.concept_prompts("diamond", 20)
    assert len(prompts) == 20 and len(set(prompts)) > 10 and all("diamond" in p for p in prompts)
    assert {p.split()[1] for p in prompts} == set(world.COLORS)


def test_old_prompts_kept_reads_the_seen_prompts_back():
    class Rendered:  # a stand-in pipeline that draws each SEEN prompt's own scene, except the first as a diamond
        def __call__(self, prompts, generator, **settings):
            by_prompt = {p: (c, s) for p, c, s, _ in cu.scores.SEEN}
            images = [world.draw(*by_prompt[p], "white", 32, 32, 20) for p in prompts]
            images[0] = world.draw(by_prompt[prompts[0]][0], "diamond", "white", 32, 32, 20)
            return type("Out", (), {"images": images})

    kept = new_concept.old_prompts_kept(Rendered(), "diamond", seeds=(0,))
    n = len(cu.scores.SEEN)
    assert kept["n"] == n and kept["diamonds"] == 1
    assert kept["colour"] == 1.0 and kept["shape"] == pytest.approx((n - 1) / n)


def test_star_loses_its_points_in_the_vae_and_a_diamond_does_not(pipe):
    star, diamond = new_concept.star("red", "white", r=22), world.draw("red", "diamond", "white", 32, 32, 22)
    assert star.size == (64, 64) and new_concept.shape_iou(star, star) == 1.0
    assert 0.5 < new_concept.shape_iou(star, diamond) < 1.0
    with torch.no_grad():
        mean = pipe.vae.encode(cu.to_tensor([diamond, star])).latent_dist.mean
    decoded = cu.decode_latents(pipe.vae, mean * pipe.vae.config.scaling_factor)
    assert new_concept.shape_iou(diamond, decoded[0]) > new_concept.shape_iou(star, decoded[1]) + 0.05


def test_training_steps(monkeypatch, capsys):
    monkeypatch.delenv("COURSE_TRAIN_STEPS", raising=False)
    assert new_concept.training_steps("tiny", "cpu") == 400 and new_concept.training_steps("sd15", "cuda") == 200
    assert new_concept.training_steps("sd15", "cpu") == 4 and "only to see the mechanics" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_TRAIN_STEPS", "16")
    assert new_concept.training_steps("tiny", "cpu") == 16
