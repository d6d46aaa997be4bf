"""Inside the UNet: its blocks' shapes for one call, and the cross-attention maps of each prompt token.

Lesson 03, §9 ("Open the UNet") uses these; the lesson writes the timestep embedding out itself.

* :func:`walk` runs the UNet once with forward hooks on its top-level blocks and returns, per block, its
  parameters and the shapes going in and out (and the skip connections from the down to the up path).
* :class:`CrossAttentionRecorder` is diffusers' ``AttnProcessor2_0`` written out for the cross-attention
  (``attn2``) layers: queries from the latents, keys and values from the text embedding,
  ``softmax(Q K^T / sqrt(d))`` times the values; it also keeps those attention probabilities (for the
  text-conditioned half of a guided batch, per head) in a :class:`CrossAttentionMaps`.
* :func:`recording_cross_attention` installs the recorders on the ``attn2`` layers only, and puts the
  original processors back afterwards.
* :meth:`CrossAttentionMaps.token_maps` turns what was kept into one map per token over the image
  (averaged over steps, and over all heads and layers or the ones asked for); :func:`overlay` and
  :func:`mass_inside` (with ``world.shape_mask``) show and measure them.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "BlockShapes",
    "walk",
    "CrossAttentionRecorder",
    "CrossAttentionMaps",
    "recording_cross_attention",
    "token_positions",
    "overlay",
    "mass_inside",
]


@dataclass
class BlockShapes:
    """One top-level block of the UNet, seen during one call (a row of :func:`walk`'s table).

    Attributes:
        name (`str`): the attribute path in the UNet, e.g. ``"down_blocks.0"``.
        kind (`str`): the block's class, e.g. ``"CrossAttnDownBlock2D"``.
        parameters (`int`): its number of parameters.
        input (`tuple`): the shape of its main input (latent features, or the timesteps for ``time_proj``).
        output (`tuple`): the shape of its main output.
        skips (`list[tuple]`): for a down block, the shapes it saves for the up path (skip connections);
            for an up block, the shapes it takes from there; empty otherwise.
    """

    name: str
    kind: str
    parameters: int
    input: tuple
    output: tuple
    skips: list = field(default_factory=list)


def _blocks(unet) -> list[tuple[str, torch.nn.Module]]:
    """The UNet's top-level blocks with parameters or shapes to show (their parameters add up to the UNet's)."""
    named = [("conv_in", unet.conv_in), ("time_proj", unet.time_proj), ("time_embedding", unet.time_embedding)]
    named += [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
    named += [("mid_block", unet.mid_block)] if unet.mid_block is not None else []
    named += [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    named += [(n, getattr(unet, n)) for n in ("conv_norm_out", "conv_out") if getattr(unet, n, None) is not None]
    return named


@torch.no_grad()
def walk(unet, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor) -> list[BlockShapes]:
    """Run the UNet once with a forward hook on each top-level block; return what each block saw.

    Args:
        unet (`UNet2DConditionModel`): the UNet.
        sample (`torch.Tensor`): latents ``[batch, in_channels, h, w]`` (``[2, 4, 64, 64]`` on SD 1.5 with guidance).
        timestep (`torch.Tensor` or `int`): t.
        encoder_hidden_states (`torch.Tensor`): text embeddings ``[batch, 77, cross_attention_dim]``.

    Returns:
        `list[BlockShapes]`: one row per block, in the order they ran: ``time_proj`` and ``time_embedding``
        (t -> a vector), ``conv_in``, the down blocks, the mid block, the up blocks, ``conv_norm_out``,
        ``conv_out``. Their parameters add up to the UNet's.
    """
    rows, handles = [], []

    def hook_for(name):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            out, skips = output, []
            if isinstance(output, tuple):  # a down block returns (features, the features it saves for the up path)
                out, skips = output[0], [tuple(s.shape) for s in output[1]]
            if "res_hidden_states_tuple" in kwargs:  # an up block takes saved features from the down path
                skips = [tuple(s.shape) for s in kwargs["res_hidden_states_tuple"]]
            rows.append(
                BlockShapes(
                    name,
                    type(module).__name__,
                    sum(p.numel() for p in module.parameters()),
                    tuple(x.shape),
                    tuple(out.shape),
                    skips,
                )
            )

        return hook

    try:
        for name, block in _blocks(unet):
            handles.append(block.register_forward_hook(hook_for(name), with_kwargs=True))
        unet(sample, timestep, encoder_hidden_states=encoder_hidden_states)
    finally:
        for handle in handles:
            handle.remove()
    return rows


class CrossAttentionMaps:
    """What :class:`CrossAttentionRecorder` keeps: per cross-attention layer and head, the sum of its attention
    probabilities over the calls (averaged over the text-conditioned images of a batch).

    Attributes:
        sums (`dict[str, torch.Tensor]`): layer name -> ``[heads, positions, tokens]`` float32 sums
            (positions = h * w latent cells at that layer's resolution).
        calls (`dict[str, int]`): layer name -> how many UNet calls were added (one per denoising step).
    """

    def __init__(self):
        self.sums, self.calls = {}, {}

    def add(self, name: str, probs: torch.Tensor):
        """Add one call's probabilities ``[heads, positions, tokens]`` (already averaged over the batch) of layer ``name``."""
        probs = probs.detach().float()
        self.sums[name] = self.sums[name] + probs if name in self.sums else probs.clone()
        self.calls[name] = self.calls.get(name, 0) + 1

    def per_layer(self, head: int | None = None) -> dict[str, torch.Tensor]:
        """The mean over the calls, per layer: ``{name: [positions, tokens]}``; each row sums to 1 over the tokens.

        Args:
            head (`int`, *optional*): that head's probabilities; default the mean over the heads.
        """
        return {name: (s.mean(dim=0) if head is None else s[head]) / self.calls[name] for name, s in self.sums.items()}

    def token_maps(
        self,
        size: tuple[int, int],
        latent_size: tuple[int, int],
        positions: int | None = None,
        layer: str | None = None,
        head: int | None = None,
    ) -> torch.Tensor:
        """One map per token over the image: the layers' maps upsampled (bilinear) to ``size`` and averaged.

        Args:
            size (`tuple[int, int]`): ``(height, width)`` of the maps, e.g. the image's.
            latent_size (`tuple[int, int]`): ``(h, w)`` of the latents the UNet was called on; a layer with
                ``positions`` cells works at ``h / 2**k x w / 2**k``, which this recovers.
            positions (`int`, *optional*): average only the layers with that many positions (one resolution,
                e.g. ``16 * 16``); default all layers, all resolutions.
            layer (`str`, *optional*): only the layers whose name starts with this, e.g.
                ``"up_blocks.1.attentions.1"``; default all.
            head (`int`, *optional*): only this head of each layer; default the mean over the heads.

        Returns:
            `torch.Tensor`: ``[tokens, height, width]`` on the CPU (77 tokens); at every pixel the maps sum to
            1 over the tokens (softmax over the keys, and averaging and bilinear upsampling keep that).
        """
        recorded = {name: m for name, m in self.per_layer(head).items() if layer is None or name.startswith(layer)}
        chosen = [m for m in recorded.values() if positions is None or m.shape[0] == positions]
        if not chosen:
            raise ValueError(
                f"no recorded layer has {positions} positions and a name starting with {layer!r}; recorded: "
                f"{sorted({(name, m.shape[0]) for name, m in self.per_layer().items()})}"
            )
        total = 0
        for m in chosen:
            shrink = (latent_size[0] * latent_size[1] / m.shape[0]) ** 0.5  # 2**k
            h, w = round(latent_size[0] / shrink), round(latent_size[1] / shrink)
            grid = m.T.reshape(1, m.shape[1], h, w).cpu()  # [1, tokens, h, w]
            total = total + F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)[0]
        return total / len(chosen)


class CrossAttentionRecorder:
    """An attention processor for the cross-attention layers that also keeps the attention probabilities.

    The computation is diffusers' default ``AttnProcessor2_0`` (``diffusers.models.attention_processor``),
    written out, so a UNet gives the same result with it, bit for bit. For a cross-attention layer:

    1. queries Q = ``to_q(latent features)``, ``[batch, positions, inner]``: one per latent cell;
    2. keys K = ``to_k(text embedding)`` and values V = ``to_v(text embedding)``, ``[batch, 77, inner]``:
       one per token;
    3. per head (``inner = heads * d``): probs = softmax(Q K^T / sqrt(d)) over the 77 tokens,
       ``[batch, heads, positions, 77]``: how much each latent cell reads from each token. Computed here
       (in float32) only to keep it, per head;
    4. out = ``to_out(probs @ V)``: each cell gets a mix of the tokens' values. Like ``AttnProcessor2_0``
       this calls PyTorch's fused ``scaled_dot_product_attention``, which computes steps 3-4 in one go.

    Args:
        maps (`CrossAttentionMaps`): where the probabilities go.
        name (`str`): this layer's name (the key in ``unet.attn_processors``).
        guided (`bool`, defaults to `True`): the batch is ``[unconditional..., text...]`` (classifier-free
            guidance): keep only the text half; `False` keeps the whole batch.
    """

    def __init__(self, maps: CrossAttentionMaps, name: str, guided: bool = True):
        self.maps, self.name, self.guided = maps, name, guided

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        """``AttnProcessor2_0.__call__``'s plumbing (norms, 4-d inputs, masks, residual) around :meth:`attend`."""
        if encoder_hidden_states is None:
            raise ValueError(
                f"{self.name}: CrossAttentionRecorder is for cross-attention layers (attn2): "
                "it needs encoder_hidden_states"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        if attention_mask is not None:
            batch, tokens = encoder_hidden_states.shape[:2]
            attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        hidden_states = self.attend(attn, hidden_states, encoder_hidden_states, attention_mask)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def attend(self, attn, latents: torch.Tensor, text: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """Cross-attention itself: the latent cells ask, the text tokens answer; the probabilities are kept.

        Args:
            attn (`Attention`): the layer (its ``to_q``, ``to_k``, ``to_v``, ``to_out``, ``heads``, ``scale``).
            latents (`torch.Tensor`): ``[batch, positions, channels]``, one row per latent cell.
            text (`torch.Tensor`): ``[batch, 77, cross_attention_dim]``, the text embedding.
            attention_mask (`torch.Tensor`, *optional*): ``[batch, heads, 1 or positions, 77]``, added to the scores.

        Returns:
            `torch.Tensor`: ``[batch, positions, channels]``.
        """
        batch, heads = latents.shape[0], attn.heads
        query = attn.to_q(latents)  # from the latents: [batch, positions, inner]
        key = attn.to_k(text)  # from the text: [batch, 77, inner]
        value = attn.to_v(text)  # from the text: [batch, 77, inner]
        d = key.shape[-1] // heads  # channels per head
        query, key, value = (
            x.view(batch, -1, heads, d).transpose(1, 2) for x in (query, key, value)
        )  # [batch, heads, n, d]
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        scores = (
            query.float() @ key.float().transpose(-1, -2) * attn.scale
        )  # Q K^T / sqrt(d): [batch, heads, positions, 77]
        if attention_mask is not None:
            scores = scores + attention_mask.float()
        self._keep(scores.softmax(dim=-1))  # the attention probabilities: each cell's weights over the 77 tokens
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)  # = probs @ V, fused
        out = out.transpose(1, 2).reshape(batch, -1, heads * d).to(query.dtype)  # heads side by side again
        return attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout

    def _keep(self, probs: torch.Tensor):
        """Average ``[batch, heads, positions, 77]`` over the kept images, and add it to the maps (per head)."""
        if self.guided:
            probs = probs[probs.shape[0] // 2 :]  # the text half of [uncond, text]
        self.maps.add(self.name, probs.mean(dim=0))


@contextmanager
def recording_cross_attention(unet, guided: bool = True):
    """Record the cross-attention probabilities of every UNet call inside the ``with`` block.

    Installs a :class:`CrossAttentionRecorder` (with ``unet.set_attn_processor``) on each cross-attention
    layer (``attn2`` in SD's transformer blocks; ``attn1``, the self-attention, keeps its processor) and
    puts the original processors back on exit, also after an error::

        with recording_cross_attention(unet) as maps:
            latents = by_hand.denoise(unet, scheduler, x_T, c, c_uncond, w)
        heat = maps.token_maps((H, W), latents.shape[-2:])  # [77, H, W]

    Args:
        unet (`UNet2DConditionModel`): the UNet.
        guided (`bool`, defaults to `True`): the UNet's batch is ``[unconditional, text]``; keep the text half.

    Yields:
        `CrossAttentionMaps`: filled while the block runs.
    """
    maps = CrossAttentionMaps()
    original = unet.attn_processors
    cross = {
        f"{name}.processor" for name, module in unet.named_modules() if getattr(module, "is_cross_attention", False)
    }
    if not cross:
        raise ValueError("this UNet has no cross-attention layers to record")
    unet.set_attn_processor(
        {
            name: CrossAttentionRecorder(maps, name, guided) if name in cross else processor
            for name, processor in original.items()
        }
    )
    try:
        yield maps
    finally:
        unet.set_attn_processor(dict(original))  # a copy: set_attn_processor empties the dict it is given


def token_positions(tokenizer, prompt: str, words: list[str]) -> dict[str, int]:
    """Where each word sits among the 77 token positions the UNet attends over (0 is the start token).

    Args:
        tokenizer (`CLIPTokenizer`): the pipeline's tokenizer.
        prompt (`str`): the prompt.
        words (`list[str]`): words of the prompt that are one token each (e.g. ``"horse"``); ``"<|endoftext|>"``
            gives the first end token (the one right after the prompt).

    Returns:
        `dict[str, int]`: word -> its first position.
    """
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    found = {}
    for word in words:
        matches = [i for i, tok in enumerate(tokens) if tok.replace("</w>", "") == word.lower()]
        if not matches:
            raise ValueError(f"{word!r} is not one token of {prompt!r}; its tokens: {tokenizer.tokenize(prompt)}")
        found[word] = matches[0]
    return found


def overlay(image: Image.Image, heat: torch.Tensor, alpha: float = 0.6, cmap: str = "jet") -> Image.Image:
    """A heat map drawn over an image in grey (the map stretched to its own 0..max).

    The image is drawn in grey so that its own colours cannot be mistaken for the map's (a red shape under
    a blue "low" would look purple).

    Args:
        image (`PIL.Image.Image`): the picture, ``W x H``.
        heat (`torch.Tensor`): ``[H, W]`` (or any size: resized bilinearly to the image's).
        alpha (`float`, defaults to 0.6): the heat map's opacity.
        cmap (`str`, defaults to ``"jet"``): a matplotlib colour map.

    Returns:
        `PIL.Image.Image`: RGB, the image's size.
    """
    from matplotlib import colormaps

    heat = heat.detach().float().cpu()
    if tuple(heat.shape) != (image.height, image.width):
        heat = F.interpolate(heat[None, None], size=(image.height, image.width), mode="bilinear", align_corners=False)[
            0, 0
        ]
    heat = (heat / heat.max().clamp_min(1e-12)).numpy()
    colours = colormaps[cmap](heat)[..., :3]
    base = np.asarray(image.convert("L").convert("RGB"), dtype=np.float32) / 255
    mixed = ((1 - alpha) * base + alpha * colours).clip(0, 1)
    return Image.fromarray((mixed * 255).round().astype(np.uint8))


def mass_inside(heat: torch.Tensor, mask: np.ndarray) -> float:
    """The share of a map's total inside a mask: 1.0 all inside, the mask's area share for a flat map.

    Args:
        heat (`torch.Tensor`): ``[H, W]``, non-negative.
        mask (`np.ndarray`): boolean ``[H, W]``.

    Returns:
        `float`: in [0, 1].
    """
    heat = heat.detach().float().cpu()
    return float(heat[torch.from_numpy(mask)].sum() / heat.sum())
