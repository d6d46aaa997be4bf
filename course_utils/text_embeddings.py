"""The text encoder's input, by hand: word vectors, what mixing them does, and one new word (textual inversion).

Lesson 02, §9 ("A text-embedding lab") writes the encoder and the word swaps out in its cells, and lesson 10, §10
adds a word and trains it (textual inversion, beside a LoRA); both check their cells against this module.
``tests/test_text_embeddings.py`` checks the module against transformers and diffusers.

CLIP's text encoder (``CLIPTextModel``; in transformers 5 its parts sit on the model itself, not under
``.text_model``) does, for token ids ``[batch, 77]``::

    x = embeddings.token_embedding(ids) + embeddings.position_embedding.weight[:77]  # [batch, 77, hidden]
    for layer in encoder.layers:                  # self-attention with a causal mask + MLP
        x = layer(x, causal_mask)                 #   (position i sees positions 0..i only)
    c = final_layer_norm(x)                       # the text embedding the UNet reads

The first line is the only place a word enters: a word *is* its row of ``token_embedding.weight``.
So changing a row changes what the word means to the model (:func:`encode_with_vectors` swaps or
mixes words), and a new row is a new word: textual inversion adds a token, grows the table by one
row (:func:`add_token`) and learns that row alone, with the UNet's ordinary training loss on a few
images of the concept (:func:`train_textual_inversion`).
"""

import torch
import torch.nn.functional as F

from course_utils import precision
from course_utils.images import to_tensor
from course_utils.new_concept import noise_latents

__all__ = [
    "token_ids",
    "causal_mask",
    "encode_embeddings",
    "encode_by_hand",
    "word_vector",
    "encode_with_vectors",
    "add_token",
    "train_textual_inversion",
]


def token_ids(tokenizer, prompt: str | list[str]) -> torch.Tensor:
    """Token ids as the pipeline makes them: padded with the end token or cut to 77 (lesson 02, §3).

    Args:
        tokenizer (`CLIPTokenizer`): the pipeline's tokenizer.
        prompt (`str` or `list[str]`): one prompt or a batch.

    Returns:
        `torch.LongTensor`: shape ``[batch, 77]`` (``tokenizer.model_max_length``), on the CPU.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def causal_mask(length: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """The additive causal mask CLIP's text encoder uses: position ``i`` attends to positions ``0..i`` only.

    Lesson 02, §9.1 builds it in one line; exercise 1 shows what it does to the 77 output vectors.

    Args:
        length (`int`): the sequence length (77).
        dtype (`torch.dtype`): the dtype of the hidden states.
        device (`torch.device`, *optional*): where the mask lives.

    Returns:
        `torch.Tensor`: shape ``[1, 1, length, length]``; 0 on and below the diagonal, the dtype's most
        negative number above it (after the softmax: weight 0).
    """
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    mask = torch.zeros(length, length, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)
    return mask[None, None]


def encode_embeddings(text_encoder, token_embeds: torch.Tensor) -> torch.Tensor:
    """Run CLIP's text encoder from the token vectors on: add positions, the layers, the final layer norm.

    Lesson 02, §9.1 writes it out (``encode_by_hand`` there). The same computation as
    ``text_encoder(ids)[0]`` (its ``last_hidden_state``), starting after the table lookup, so any vectors
    can go in: mixed words, new words, vectors being learned (no ``no_grad`` here).

    Args:
        text_encoder (`CLIPTextModel`): the pipeline's text encoder.
        token_embeds (`torch.Tensor`): ``[batch, length, hidden]``, e.g.
            ``text_encoder.embeddings.token_embedding(ids)`` (length <= 77).

    Returns:
        `torch.Tensor`: the text embedding, ``[batch, length, hidden]`` (hidden = 768 for SD 1.5, 64 for `tiny`).
    """
    length = token_embeds.shape[1]
    positions = text_encoder.embeddings.position_embedding.weight[:length]  # [length, hidden]: one row per position
    hidden = token_embeds + positions
    mask = causal_mask(length, hidden.dtype, hidden.device)
    for layer in text_encoder.encoder.layers:
        hidden = layer(hidden, mask)
    return text_encoder.final_layer_norm(hidden)


def encode_by_hand(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    """Token ids to the text embedding, written out: table lookup, then :func:`encode_embeddings`.

    Args:
        text_encoder (`CLIPTextModel`): the pipeline's text encoder.
        input_ids (`torch.LongTensor`): ``[batch, 77]`` from :func:`token_ids`.

    Returns:
        `torch.Tensor`: ``[batch, 77, hidden]``, equal to ``text_encoder(input_ids)[0]`` (and to
        ``pipe.encode_prompt``'s) up to rounding.
    """
    table = text_encoder.embeddings.token_embedding  # nn.Embedding(vocabulary, hidden)
    with torch.no_grad():
        return encode_embeddings(text_encoder, table(input_ids.to(table.weight.device)))


def word_vector(tokenizer, text_encoder, word: str) -> torch.Tensor:
    """The row of the token table that a one-token word looks up (lesson 02, §9.2: ``row``).

    Args:
        tokenizer (`CLIPTokenizer`): the pipeline's tokenizer.
        text_encoder (`CLIPTextModel`): the pipeline's text encoder.
        word (`str`): a word that is one token (``"red"``, ``"horse"``).

    Returns:
        `torch.Tensor`: shape ``[hidden]`` (a copy).

    Raises:
        ValueError: when ``word`` is several tokens.
    """
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens {tokenizer.convert_ids_to_tokens(ids)}; pick a one-token word")
    return text_encoder.embeddings.token_embedding.weight[ids[0]].detach().clone()


def encode_with_vectors(tokenizer, text_encoder, prompt: str, vectors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Encode ``prompt`` with some words' vectors replaced: a word swap, or a mix of two words.

    Lesson 02, §9.2 writes it (``encode_with``) and draws the results with ``pipe(prompt_embeds=...)``.

    Args:
        tokenizer (`CLIPTokenizer`): the pipeline's tokenizer.
        text_encoder (`CLIPTextModel`): the pipeline's text encoder.
        prompt (`str`): the prompt, e.g. ``"a red circle on a blue background"``.
        vectors (`dict[str, torch.Tensor]`): one-token word -> the ``[hidden]`` vector to use wherever it
            occurs, e.g. ``{"circle": 0.5 * word_vector(..., "circle") + 0.5 * word_vector(..., "square")}``.

    Returns:
        `torch.Tensor`: ``[1, 77, hidden]``, to pass as ``pipe(prompt_embeds=...)``.

    Raises:
        ValueError: when a word of ``vectors`` is several tokens or not in the prompt.
    """
    ids = token_ids(tokenizer, prompt)
    table = text_encoder.embeddings.token_embedding
    with torch.no_grad():
        embeds = table(ids.to(table.weight.device))  # [1, 77, hidden]
        for word, vector in vectors.items():
            word_ids = tokenizer(word, add_special_tokens=False).input_ids
            if len(word_ids) != 1:
                raise ValueError(f"{word!r} is {len(word_ids)} tokens; pick a one-token word")
            where = ids[0] == word_ids[0]
            if not where.any():
                raise ValueError(f"{word!r} is not a token of {prompt!r}")
            embeds[0, where.to(embeds.device)] = vector.to(embeds.device, embeds.dtype)
        return encode_embeddings(text_encoder, embeds)


def add_token(tokenizer, text_encoder, token: str, vector: torch.Tensor) -> int:
    """Add a new word: a token in the tokenizer and one new row, ``vector``, at the end of the token table.

    Lesson 10, §10 does these three steps in a cell. It is what ``pipe.load_textual_inversion(vector,
    token=token)`` does for a one-vector embedding, without the note transformers prints when it grows the
    table (``mean_resizing=False``: the new row is set right after, so how it would be filled does not matter).

    Args:
        tokenizer (`CLIPTokenizer`): changed in place (``add_tokens``).
        text_encoder (`CLIPTextModel`): changed in place (``resize_token_embeddings``; the other rows stay).
        token (`str`): the new word, e.g. ``"<my-shape>"``; must be new.
        vector (`torch.Tensor`): its row, ``[hidden]``.

    Returns:
        `int`: the new token's id (the old vocabulary size: 49408 for CLIP).

    Raises:
        ValueError: when the token exists already.
    """
    if token in tokenizer.get_vocab():
        raise ValueError(f"{token!r} is already a token; pick a new word (or start from a freshly loaded pipeline)")
    tokenizer.add_tokens(token)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    token_id = tokenizer.convert_tokens_to_ids(token)
    with torch.no_grad():
        text_encoder.get_input_embeddings().weight[token_id] = vector.to(text_encoder.device, text_encoder.dtype)
    return token_id


def train_textual_inversion(
    pipe,
    images: list,
    captions: list[str],
    token: str,
    steps: int = 30,
    learning_rate: float = 0.15,
    timesteps: tuple[int, int] = (0, 1000),
    seed: int = 0,
    noise_offset: float = 0.0,
    batch_size: int | None = None,
    gradient_checkpointing: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Learn the new word's row so that the frozen UNet denoises ``images`` best when the caption names it.

    Lesson 10, §10 writes this loop out. Stable Diffusion's training loss (lesson 10, §4) with everything frozen but
    one vector, the ``[hidden]`` row of ``token`` (starting from its current value):

    1. once: each image's latents ``x_0`` (the VAE's mean, scaled; ``[n, 4, h, w]``, kept on the CPU in float32)
       and its caption's token vectors from the table;
    2. every step, as real textual-inversion runs do (diffusers' ``examples/textual_inversion``): fresh noise
       ``eps`` and a fresh timestep per image, uniform in ``timesteps``. They are drawn from one CPU generator
       seeded with ``seed``, in the order ``new_concept.training_loss`` draws them (``randn`` for ``eps``,
       ``randn([n, 4, 1, 1])`` times ``noise_offset`` added to it, ``randint`` for ``t``), so that a loop calling
       that function on all ``n`` images gets the same numbers. Then ``x_t = add_noise(x_0, eps, t)``; the token
       vectors with the new row put in as a tensor that has a gradient; :func:`encode_embeddings`;
       ``eps_hat = unet(x_t, t, c)``; ``loss = mse(eps_hat, eps)``; one Adam step on the row alone.

    Each step's loss is at new noise levels, so it jumps from step to step; to see learning, compare a loss on
    fixed noise and timesteps before and after (as lesson 10, §6 does for its LoRA).

    Half precision as diffusers' training scripts do it (:mod:`course_utils.precision`): the row trains in
    float32 whatever the models' dtype, the forward pass runs under autocast, and in float16 a ``GradScaler``
    scales the loss. In float32 none of that changes a number.

    Args:
        pipe (`StableDiffusionPipeline`): its tokenizer must know ``token`` (:func:`add_token`); the text
            encoder, UNet, VAE and scheduler are used and left unchanged (the row is not written back).
        images (`list[PIL.Image.Image]`): ``n`` pictures of the concept, all at the pipeline's size.
        captions (`list[str]`): one per image, each containing ``token`` (``"a red <diamond>"``).
        token (`str`): the new word.
        steps (`int`, defaults to 30): Adam steps, each on all ``n`` images (`tiny`: 24 images, ~1 s a step on a CPU).
        learning_rate (`float`, defaults to 0.15): suits `tiny` (its word rows are ~0.25 long); lesson 10 uses 5e-3
            on SD 1.5.
        timesteps (`tuple[int, int]`, defaults to ``(0, 1000)``): the range the ``t`` are drawn from (upper bound
            excluded), every training timestep by default, as in training.
        seed (`int`, defaults to 0): for the noise and the timesteps.
        noise_offset (`float`, defaults to 0): offset noise, as ``new_concept.training_loss`` adds it (lesson 10
            passes ``new_concept.NOISE_OFFSET``, how `tiny` was trained).
        batch_size (`int`, *optional*): images per forward and backward pass; the gradients of the passes add up
            to the step's (gradient accumulation). Default: all ``n`` at once. At 512x512 on a GPU, 1 or 2.
        gradient_checkpointing (`bool`, defaults to `False`): recompute the UNet's activations in the backward
            pass instead of keeping them (SD 1.5 at 512x512: a fraction of the memory, about a third more time).

    Returns:
        `tuple[torch.Tensor, list[float]]`: the learned row ``[hidden]`` (in the text encoder's dtype) and each
        step's loss (before its update).
    """
    tokenizer, text_encoder, unet, vae, scheduler = (
        pipe.tokenizer,
        pipe.text_encoder,
        pipe.unet,
        pipe.vae,
        pipe.scheduler,
    )
    token_id = tokenizer.convert_tokens_to_ids(token)
    table = text_encoder.get_input_embeddings()  # nn.Embedding(vocabulary, hidden)
    pixels = to_tensor(images)  # [n, 3, H, W] in [-1, 1]
    n = len(images)
    batch_size = batch_size or n
    with torch.no_grad():
        latents = torch.cat(
            [
                vae.encode(pixels[k : k + batch_size].to(vae.device, vae.dtype)).latent_dist.mean
                for k in range(0, n, batch_size)
            ]
        )
        latents = latents.float().cpu() * vae.config.scaling_factor  # x_0: [n, 4, h, w], on the CPU in float32
        ids = token_ids(tokenizer, captions).to(table.weight.device)  # [n, 77]
        frozen_rows = table(ids)  # [n, 77, hidden]
    where = (ids == token_id)[..., None]  # [n, 77, 1]: True where the new word stands
    if not where.any(dim=1).all():
        raise ValueError(f"every caption must contain {token!r} (add it first with add_token); got {captions}")
    row = table.weight[token_id].detach().float().clone().requires_grad_(True)  # the one thing that learns, float32
    optimizer = torch.optim.Adam([row], lr=learning_rate)
    scaler = precision.grad_scaler(unet.device, unet.dtype)  # float16: scales the loss (else does nothing)
    generator = torch.Generator().manual_seed(seed)
    was = [(p, p.requires_grad) for m in (unet, text_encoder) for p in m.parameters()]
    for p, _ in was:
        p.requires_grad_(False)  # no gradients for the models' weights (and none left behind on them)
    checkpointing = unet.is_gradient_checkpointing
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    losses = []
    try:
        for _ in range(steps):
            # this step's noise and timesteps, for all n images, as new_concept.training_loss draws them
            noisy, noise, t = noise_latents(latents, scheduler, generator, noise_offset, timesteps)  # x_t on the CPU
            optimizer.zero_grad()
            loss_sum = 0.0
            for k in range(0, n, batch_size):
                part = slice(k, k + batch_size)
                with precision.autocast(unet.device, unet.dtype):
                    token_vectors = torch.where(
                        where[part], row.to(frozen_rows.dtype), frozen_rows[part]
                    )  # [b, 77, hidden]
                    c = encode_embeddings(text_encoder, token_vectors)
                    eps_hat = unet(
                        noisy[part].to(unet.device, unet.dtype),
                        t[part].to(unet.device),
                        encoder_hidden_states=c.to(unet.device, unet.dtype),
                    ).sample
                # the mean over all n images: each pass's share (exactly 1.0 when there is one pass)
                loss = F.mse_loss(eps_hat.float(), noise[part].to(unet.device).float()) * (len(noisy[part]) / n)
                scaler.scale(loss).backward()
                loss_sum += loss.item()
            scaler.step(optimizer)  # (unscales first; skips a step whose float16 gradients overflowed)
            scaler.update()
            losses.append(loss_sum)
    finally:
        for p, requires_grad in was:
            p.requires_grad_(requires_grad)
        if gradient_checkpointing and not checkpointing:
            unet.disable_gradient_checkpointing()
    return row.detach().to(text_encoder.dtype), losses
