"""Lesson 2, §9's text-embedding lab (course_utils/text_embeddings.py), checked against transformers and diffusers
on `tiny`: the encoder by hand, swapped words, a new token row, and textual inversion's loss."""

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


def test_textual_inversion_loss_falls_and_only_the_row_learns(pipe):
    token = "<my-shape>"
    te.add_token(pipe.tokenizer, pipe.text_encoder, token, te.word_vector(pipe.tokenizer, pipe.text_encoder, "shape"))
    weights = {name: p.detach().clone() for m in (pipe.unet, pipe.text_encoder) for name, p in m.named_parameters()}
    flags = {name: p.requires_grad for m in (pipe.unet, pipe.text_encoder) for name, p in m.named_parameters()}
    images, captions = _purple_triangles(8, token)
    row, losses = te.train_textual_inversion(pipe, images, captions, token, steps=4)
    assert row.shape == (pipe.text_encoder.config.hidden_size,)
    assert len(losses) == 4 and losses[-1] < losses[0]
    start = te.word_vector(pipe.tokenizer, pipe.text_encoder, token)  # the table keeps the starting row
    assert not torch.equal(row, start)
    for m in (pipe.unet, pipe.text_encoder):
        for name, p in m.named_parameters():
            assert torch.equal(p, weights[name]) and p.requires_grad == flags[name] and p.grad is None


def test_textual_inversion_is_seeded(pipe):
    token = "<my-shape>"
    te.add_token(pipe.tokenizer, pipe.text_encoder, token, te.word_vector(pipe.tokenizer, pipe.text_encoder, "shape"))
    images, captions = _purple_triangles(4, token)
    a, _ = te.train_textual_inversion(pipe, images, captions, token, steps=2)
    b, _ = te.train_textual_inversion(pipe, images, captions, token, steps=2)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="must contain"):
        te.train_textual_inversion(pipe, images, ["a triangle"] * 4, token, steps=1)
