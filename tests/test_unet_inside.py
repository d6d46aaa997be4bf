"""`course_utils.unet_inside` on the `tiny` UNet: the block walk, the cross-attention recorder and its maps."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from course_utils import by_hand, unet_inside, world

PROMPT = "a red circle on a blue background"


@pytest.fixture
def inputs(tiny_pipe):
    """One guided UNet call's inputs: latents [2, 4, 16, 16], a timestep, text embeddings [uncond, text]."""
    text = by_hand.encode_text(tiny_pipe.tokenizer, tiny_pipe.text_encoder, ["", PROMPT])
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    return torch.cat([latents] * 2), torch.tensor(500), text


def _call(unet, inputs):
    sample, t, text = inputs
    with torch.no_grad():
        return unet(sample, t, encoder_hidden_states=text).sample


def test_walk_shapes_and_parameters(tiny_pipe, inputs):
    unet = tiny_pipe.unet
    rows = unet_inside.walk(unet, *inputs)
    names = [r.name for r in rows]
    assert names[:3] == ["time_proj", "time_embedding", "conv_in"] and names[-1] == "conv_out"
    assert sum(r.parameters for r in rows) == sum(p.numel() for p in unet.parameters())
    by_name = {r.name: r for r in rows}
    assert by_name["time_proj"].output == (2, unet.config.block_out_channels[0])
    assert by_name["conv_in"].output == (2, unet.config.block_out_channels[0], 16, 16)
    assert by_name["down_blocks.0"].output[-2:] == (8, 8)  # each down block but the last halves the resolution
    assert by_name["conv_out"].output == (2, 4, 16, 16)
    saved = [s for r in rows if r.name.startswith("down_blocks") for s in r.skips]
    taken = [s for r in rows if r.name.startswith("up_blocks") for s in r.skips]
    assert len(saved) + 1 == len(taken)  # conv_in's output is the first skip, the down blocks save the rest
    assert not any(h._forward_hooks for h in unet.modules())  # hooks removed


def test_recorder_gives_the_default_output_bit_for_bit(tiny_pipe, inputs):
    unet = tiny_pipe.unet
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
    default = _call(unet, inputs)
    with unet_inside.recording_cross_attention(unet) as maps:
        recorded = _call(unet, inputs)
        cross = [n for n, p in unet.attn_processors.items() if isinstance(p, unet_inside.CrossAttentionRecorder)]
    assert cross and all(".attn2." in n for n in cross)
    assert torch.equal(recorded, default)
    assert set(maps.sums) == set(cross) and all(n == 1 for n in maps.calls.values())


def test_kept_probabilities_are_attn_processors_softmax(tiny_pipe, inputs):
    """The kept maps are the softmax(Q K^T / sqrt(d)) diffusers' classic AttnProcessor computes, and probs @ V is the output."""
    layer = tiny_pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    latents = torch.randn(2, 256, layer.to_q.in_features, generator=torch.Generator().manual_seed(1))
    text = inputs[2]
    maps = unet_inside.CrossAttentionMaps()
    recorder = unet_inside.CrossAttentionRecorder(maps, "layer", guided=False)
    with torch.no_grad():
        out = recorder(layer, latents, encoder_hidden_states=text)
        query, key, value = (
            layer.head_to_batch_dim(x) for x in (layer.to_q(latents), layer.to_k(text), layer.to_v(text))
        )
        probs = layer.get_attention_scores(query, key)  # [batch * heads, 256, 77]
        classic = layer.to_out[0](layer.batch_to_head_dim(torch.bmm(probs, value)))
        reference = AttnProcessor()(layer, latents, encoder_hidden_states=text)
    assert torch.allclose(maps.per_layer()["layer"], probs.mean(0), atol=1e-6)
    assert torch.allclose(out, classic, atol=1e-5) and torch.allclose(out, reference, atol=1e-5)


def test_processors_restored_even_after_an_error(tiny_pipe, inputs):
    unet = tiny_pipe.unet
    before = unet.attn_processors
    with pytest.raises(RuntimeError):
        with unet_inside.recording_cross_attention(unet):
            raise RuntimeError("boom")
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_maps_shapes_and_sum_to_one_over_tokens(tiny_pipe, inputs):
    with unet_inside.recording_cross_attention(tiny_pipe.unet) as maps:
        _call(tiny_pipe.unet, inputs)
        _call(tiny_pipe.unet, inputs)
    layers = maps.per_layer()
    assert {m.shape for m in layers.values()} == {(256, 77), (64, 77), (16, 77)}  # 16x16, 8x8, 4x4 latent cells
    assert all(n == 2 for n in maps.calls.values())
    for m in layers.values():
        assert torch.allclose(m.sum(-1), torch.ones(m.shape[0]), atol=1e-5)
    for positions in (None, 256, 16):
        heat = maps.token_maps((64, 64), (16, 16), positions=positions)
        assert heat.shape == (77, 64, 64)
        assert torch.allclose(heat.sum(0), torch.ones(64, 64), atol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        maps.token_maps((64, 64), (16, 16), positions=100)


def test_maps_per_head_and_layer(tiny_pipe, inputs):
    """One head or one layer's maps: the heads' maps average to the default, and each still sums to 1 per pixel."""
    with unet_inside.recording_cross_attention(tiny_pipe.unet) as maps:
        _call(tiny_pipe.unet, inputs)
    heads = tiny_pipe.unet.up_blocks[1].attentions[1].transformer_blocks[0].attn2.heads
    assert {tuple(s.shape[:1]) for s in maps.sums.values()} == {(heads,)}  # kept per head
    layer = "up_blocks.1.attentions.1"
    per_head = [maps.token_maps((64, 64), (16, 16), layer=layer, head=h) for h in range(heads)]
    assert torch.allclose(torch.stack(per_head).mean(0), maps.token_maps((64, 64), (16, 16), layer=layer), atol=1e-6)
    for heat in per_head:
        assert torch.allclose(heat.sum(0), torch.ones(64, 64), atol=1e-5)
    assert not torch.allclose(per_head[0], per_head[1])  # the heads read differently
    with pytest.raises(ValueError, match="no_such_block"):
        maps.token_maps((64, 64), (16, 16), layer="no_such_block")


def test_guided_keeps_the_text_half(tiny_pipe, inputs):
    sample, t, text = inputs
    with unet_inside.recording_cross_attention(tiny_pipe.unet) as guided:
        _call(tiny_pipe.unet, inputs)
    with unet_inside.recording_cross_attention(tiny_pipe.unet, guided=False) as text_only:
        _call(tiny_pipe.unet, (sample[1:], t, text[1:]))
    for name in guided.sums:
        assert torch.allclose(guided.sums[name], text_only.sums[name], atol=1e-5)


def test_token_positions(tiny_pipe):
    found = unet_inside.token_positions(tiny_pipe.tokenizer, PROMPT, ["red", "circle", "background", "<|endoftext|>"])
    assert found == {"red": 2, "circle": 3, "background": 7, "<|endoftext|>": 8}
    with pytest.raises(ValueError, match="not one token"):
        unet_inside.token_positions(tiny_pipe.tokenizer, PROMPT, ["square"])


def test_shape_mask_and_mass_inside():
    image = world.draw("red", "square", "blue", cx=32, cy=32, r=12)
    mask = world.shape_mask(image)
    assert abs(mask.sum() - 24 * 24) <= 2 * 24  # the 24x24 square, give or take its soft edge
    flat = torch.ones(64, 64)
    assert unet_inside.mass_inside(flat, mask) == pytest.approx(mask.mean())
    inside = torch.from_numpy(mask.astype(np.float32))
    assert unet_inside.mass_inside(inside, mask) == pytest.approx(1.0)
    shown = unet_inside.overlay(image, inside[::4, ::4])  # any size: resized to the image's
    assert shown.size == image.size and shown.mode == "RGB"
