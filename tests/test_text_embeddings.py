"""The text-embedding lab of lesson 2, §9 and the textual inversion of lesson 10, §10 (course_utils/text_embeddings.py),
checked against transformers and diffusers on `tiny`: the encoder by hand, swapped words, a new token row, and
textual inversion's training."""

import random

import pytest
import torch

import course_utils as cu
from course_utils import text_embeddings as te
from course_utils import world

PROMPTS = ["a red circle on a blue background", "a green square", cu.prompt("main", "sd15")]


@pytest.fixture(scope="module")
def reader():
    """A `tiny` pipeline for the tests that only read it."""
    return cu.load_pipeline("text2img", profile="tiny", device="cpu")


@pytest.fixture
def pipe():
    """A fresh `tiny` pipeline for a test that changes it (adds tokens): the shared ones stay untouched."""
    return cu.load_pipeline("text2img", profile="tiny", device="cpu")


def test_token_ids_are_the_pipelines(reader):
    ids = te.token_ids(reader.tokenizer, PROMPTS)
    assert ids.shape == (3, 77)
    expected = reader.tokenizer(
        PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    assert torch.equal(ids, expected)


def test_causal_mask_blocks_the_future():
    mask = te.causal_mask(5, torch.float32)
    assert mask.shape == (1, 1, 5, 5)
    assert (mask[0, 0].tril() == 0).all()
    assert (mask[0, 0].triu(1)[torch.ones(5, 5).triu(1).bool()] == torch.finfo(torch.float32).min).all()


def test_encode_by_hand_equals_the_encoder_and_encode_prompt(reader):
    ids = te.token_ids(reader.tokenizer, PROMPTS)
    by_hand = te.encode_by_hand(reader.text_encoder, ids)
    with torch.no_grad():
        encoder = reader.text_encoder(ids)[0]
    assert by_hand.shape == (3, 77, reader.text_encoder.config.hidden_size)
    assert (by_hand - encoder).abs().max() <= 1e-5
    pipeline, _ = reader.encode_prompt(PROMPTS, "cpu", 1, False)
    assert (by_hand - pipeline).abs().max() <= 1e-5


def test_encode_by_hand_in_eager_attention_too(pipe):
    """The mask is additive, so it works with eager attention as well as SDPA."""
    ids = te.token_ids(pipe.tokenizer, PROMPTS[:1])
    with torch.no_grad():
        expected = pipe.text_encoder(ids)[0]
    pipe.text_encoder.set_attn_implementation("eager")
    assert (te.encode_by_hand(pipe.text_encoder, ids) - expected).abs().max() <= 1e-5


def test_a_swapped_word_is_the_other_word(reader):
    tok, enc = reader.tokenizer, reader.text_encoder
    swapped = te.encode_with_vectors(tok, enc, "a red circle", {"red": te.word_vector(tok, enc, "green")})
    assert torch.equal(swapped, te.encode_by_hand(enc, te.token_ids(tok, "a green circle")))
    own = te.encode_with_vectors(tok, enc, "a red circle", {"red": te.word_vector(tok, enc, "red")})
    assert torch.equal(own, te.encode_by_hand(enc, te.token_ids(tok, "a red circle")))
    half = 0.5 * te.word_vector(tok, enc, "red") + 0.5 * te.word_vector(tok, enc, "blue")
    mixed = te.encode_with_vectors(tok, enc, "a red circle", {"red": half})
    assert not torch.equal(mixed, own) and not torch.equal(mixed, swapped)


def test_word_errors(reader):
    tok, enc = reader.tokenizer, reader.text_encoder
    with pytest.raises(ValueError, match="tokens"):
        te.word_vector(tok, enc, "<not-a-word>")
    with pytest.raises(ValueError, match="not a token of"):
        te.encode_with_vectors(tok, enc, "a red circle", {"blue": te.word_vector(tok, enc, "blue")})


def test_add_token_adds_one_row_and_leaves_the_others(pipe):
    tok, enc = pipe.tokenizer, pipe.text_encoder
    before = enc.get_input_embeddings().weight.detach().clone()
    vector = torch.randn(before.shape[1])
    token_id = te.add_token(tok, enc, "<new>", vector)
    after = enc.get_input_embeddings().weight
    assert token_id == before.shape[0] == 49408
    assert after.shape == (before.shape[0] + 1, before.shape[1])
    assert torch.equal(after[:-1], before) and torch.equal(after[token_id], vector)
    assert tok("a <new>").input_ids == [49406, 320, token_id, 49407]
    with pytest.raises(ValueError, match="already a token"):
        te.add_token(tok, enc, "<new>", vector)


def test_add_token_does_what_load_textual_inversion_does(pipe):
    vector = te.word_vector(pipe.tokenizer, pipe.text_encoder, "purple")
    te.add_token(pipe.tokenizer, pipe.text_encoder, "<by-hand>", vector)
    pipe.load_textual_inversion(vector, token="<by-diffusers>")  # diffusers' API, a tensor + a token
    a, _ = pipe.encode_prompt("a <by-hand> square", "cpu", 1, False)
    b, _ = pipe.encode_prompt("a <by-diffusers> square", "cpu", 1, False)
    c, _ = pipe.encode_prompt("a purple square", "cpu", 1, False)
    assert torch.equal(a, b) and torch.equal(a, c)


def _purple_triangles(n: int, token: str):
    rng = random.Random(0)
    images, captions = [], []
    for _ in range(n):
        r = rng.uniform(10, 22)
        images.append(
            world.draw(
                "purple",
                "triangle",
                rng.choice(["white", "black", "gray"]),
                rng.uniform(r + 2, 62 - r),
                rng.uniform(r + 2, 62 - r),
                r,
            )
        )
        captions.append(f"a {token}")
    return images, captions


def _triangles_with_named_backgrounds(n: int, token: str):
    """Purple triangles on every background but purple; half the captions name the background ("a <t> on a
    gray background"), so that the new word is left with the shape (build/appendix/10.py's set)."""
    rng = random.Random(0)
    images, captions = [], []
    for _ in range(n):
        background = rng.choice([b for b in world.BACKGROUNDS if b != "purple"])
        r = rng.uniform(10, 22)
        images.append(
            world.draw("purple", "triangle", background, rng.uniform(r + 2, 62 - r), rng.uniform(r + 2, 62 - r), r)
        )
        captions.append(f"a {token}" if rng.random() < 0.5 else f"a {token} on a {background} background")
    return images, captions


def _purple_triangles_drawn(pipe, token: str) -> int:
    """How many of 4 pictures of "a <token>" (seeds 0-3, 10 steps) show a purple triangle."""
    images = pipe(
        [f"a {token}"] * 4,
        generator=[torch.Generator().manual_seed(s) for s in range(4)],
        num_inference_steps=10,
        guidance_scale=3.0,
    ).images
    found = [world.classify(im) for im in images]
    return sum(f["color"] == "purple" and f["shape"] == "triangle" for f in found)


@pytest.mark.slow
def test_textual_inversion_learns_only_the_row_and_names_a_shape_tiny_draws(pipe):
    """Each step's loss is at fresh noise and timesteps, so it jumps; what the word draws shows the learning."""
    token = "<my-shape>"
    te.add_token(pipe.tokenizer, pipe.text_encoder, token, te.word_vector(pipe.tokenizer, pipe.text_encoder, "shape"))
    pipe.set_progress_bar_config(disable=True)
    weights = {name: p.detach().clone() for m in (pipe.unet, pipe.text_encoder) for name, p in m.named_parameters()}
    flags = {name: p.requires_grad for m in (pipe.unet, pipe.text_encoder) for name, p in m.named_parameters()}
    images, captions = _triangles_with_named_backgrounds(24, token)
    start = te.word_vector(pipe.tokenizer, pipe.text_encoder, token)
    row, losses = te.train_textual_inversion(pipe, images, captions, token, steps=30, learning_rate=0.05)
    assert row.shape == (pipe.text_encoder.config.hidden_size,)
    assert len(losses) == 30 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(row, start) and torch.equal(te.word_vector(pipe.tokenizer, pipe.text_encoder, token), start)
    for m in (pipe.unet, pipe.text_encoder):
        for name, p in m.named_parameters():
            assert torch.equal(p, weights[name]) and p.requires_grad == flags[name] and p.grad is None
    before = _purple_triangles_drawn(pipe, token)
    with torch.no_grad():
        pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids(token)] = row
    assert before <= 1 and _purple_triangles_drawn(pipe, token) >= 3


def test_textual_inversion_draws_fresh_noise_and_timesteps_as_training_loss_does(pipe):
    """A loop that calls new_concept.training_loss on all images each step (lesson 10, §10) is the reference."""
    from course_utils import new_concept

    token = "<my-shape>"
    te.add_token(pipe.tokenizer, pipe.text_encoder, token, te.word_vector(pipe.tokenizer, pipe.text_encoder, "shape"))
    images, captions = _purple_triangles(4, token)
    reference, reference_losses = te.train_textual_inversion(
        pipe, images, captions, token, steps=3, noise_offset=new_concept.NOISE_OFFSET
    )
    table = pipe.text_encoder.get_input_embeddings()
    with torch.no_grad():
        x_0 = pipe.vae.encode(cu.to_tensor(images)).latent_dist.mean * pipe.vae.config.scaling_factor
        ids = te.token_ids(pipe.tokenizer, captions)
        frozen = table(ids)
    token_id = pipe.tokenizer.convert_tokens_to_ids(token)
    where = (ids == token_id)[..., None]  # [n, 77, 1]
    row = table.weight[token_id].detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([row], lr=0.15)
    generator, losses = torch.Generator().manual_seed(0), []
    pipe.unet.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    for _ in range(3):
        c = te.encode_embeddings(pipe.text_encoder, torch.where(where, row, frozen))
        loss = new_concept.training_loss(pipe.unet, pipe.scheduler, x_0, c, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert (row.detach() - reference).abs().max() <= 1e-5
    assert max(abs(a - b) for a, b in zip(losses, reference_losses)) <= 1e-6


def test_textual_inversion_is_seeded(pipe):
    token = "<my-shape>"
    te.add_token(pipe.tokenizer, pipe.text_encoder, token, te.word_vector(pipe.tokenizer, pipe.text_encoder, "shape"))
    images, captions = _purple_triangles(4, token)
    a, _ = te.train_textual_inversion(pipe, images, captions, token, steps=2)
    b, _ = te.train_textual_inversion(pipe, images, captions, token, steps=2)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="must contain"):
        te.train_textual_inversion(pipe, images, ["a triangle"] * 4, token, steps=1)
