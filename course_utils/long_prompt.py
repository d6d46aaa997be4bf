"""Prompts longer than CLIP's 77-token window: what is cut off, and one way past the limit (lesson 05, §6).

Lesson 02, §4 shows the 77-token window by hand; lesson 05, §6 derives everything here.

SD 1.5's text encoder has 77 position embeddings, so the pipeline tokenizes a prompt as
``[BOS] + 75 content tokens + [EOS]`` (padded with ``<|endoftext|>``) and *drops* every token
after the 75th (diffusers logs a warning that lists the cut text). The cut words have no effect.

One way past the limit (the one popular web UIs use): split the content tokens into chunks of 75,
wrap each chunk in BOS/EOS, encode each chunk separately and concatenate the embeddings along the
sequence axis: ``[1, 77 * chunks, hidden]``. The UNet's cross-attention accepts any sequence
length, so the result goes straight into the pipeline as ``prompt_embeds=`` /
``negative_prompt_embeds=`` (both must have the same shape, so both get the same number of chunks)::

    cond, uncond = long_prompt_embeds(pipe, long_prompt, negative_prompt)
    image = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond).images[0]
"""

import logging
from contextlib import contextmanager

import torch

__all__ = ["content_token_ids", "which_tokens_are_cut", "long_prompt_embeds", "captured_warnings"]


def content_token_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids without BOS/EOS/padding and without truncation (lesson 05, §6).

    Args:
        tokenizer (`CLIPTokenizer`): the pipeline's tokenizer.
        prompt (`str`): any length.

    Returns:
        `list[int]`: one id per content token (a word may be several tokens).
    """
    return tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False).input_ids


def which_tokens_are_cut(tokenizer, prompt: str) -> list[str]:
    """The words the pipeline drops: everything after the first ``model_max_length - 2`` = 75 content tokens.

    Lesson 05, §6 derives this (lesson 02, §4 cuts a prompt by hand).

    Args:
        tokenizer (`CLIPTokenizer`): the pipeline's tokenizer (``model_max_length`` = 77: BOS + 75 + EOS).
        prompt (`str`): the prompt.

    Returns:
        `list[str]`: the cut text split into words, lower-cased as CLIP's tokenizer sees it (the same text
        diffusers' truncation warning lists); empty when the prompt fits. If the cut falls inside a word,
        the first entry is the end of that word.
    """
    ids = content_token_ids(tokenizer, prompt)
    room = tokenizer.model_max_length - 2
    if len(ids) <= room:
        return []
    return tokenizer.decode(ids[room:]).split()


def _chunks(tokenizer, prompt: str, n_chunks: int | None = None) -> list[list[int]]:
    """``[BOS] + up to 75 ids + [EOS]`` padded to 77, for each chunk of 75 content tokens."""
    room = tokenizer.model_max_length - 2
    ids = content_token_ids(tokenizer, prompt)
    pieces = [ids[i : i + room] for i in range(0, len(ids), room)] or [[]]
    if n_chunks is not None:
        pieces += [[]] * (n_chunks - len(pieces))  # empty chunks, like the empty prompt
    rows = []
    for piece in pieces:
        row = [tokenizer.bos_token_id] + piece + [tokenizer.eos_token_id]
        rows.append(row + [tokenizer.pad_token_id] * (tokenizer.model_max_length - len(row)))
    return rows


@torch.no_grad()
def _encode_rows(text_encoder, rows: list[list[int]]) -> torch.Tensor:
    ids = torch.tensor(rows, device=text_encoder.device)  # [chunks, 77]
    hidden = text_encoder(ids)[0]  # [chunks, 77, hidden]: each chunk encoded on its own
    return hidden.reshape(1, -1, hidden.shape[-1]).to(text_encoder.dtype)  # [1, 77 * chunks, hidden]


def long_prompt_embeds(pipe, prompt: str, negative_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings for a prompt of any length: 75-token chunks, each in BOS/EOS, encoded and concatenated.

    Lesson 05, §6 derives this ("one way past the limit"); its exercise 2 rebuilds it by hand and compares.

    For a prompt that fits in one chunk the result equals ``pipe.encode_prompt``'s exactly.

    Args:
        pipe (`StableDiffusionPipeline` or `StableDiffusionImg2ImgPipeline`): supplies tokenizer and text encoder.
        prompt (`str`): the prompt, any length.
        negative_prompt (`str`, defaults to ``""``): the negative prompt (``""`` = plain guidance), any length.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: ``(prompt_embeds, negative_prompt_embeds)``, each
        ``[1, 77 * chunks, hidden]`` with the same number of chunks (the longer of the two prompts;
        the shorter is padded with empty chunks). Pass them as ``prompt_embeds=`` and
        ``negative_prompt_embeds=`` (and no ``prompt=``) to the pipeline.
    """
    tok = pipe.tokenizer
    n = max(len(_chunks(tok, prompt)), len(_chunks(tok, negative_prompt)))
    cond = _encode_rows(pipe.text_encoder, _chunks(tok, prompt, n))
    uncond = _encode_rows(pipe.text_encoder, _chunks(tok, negative_prompt, n))
    return cond, uncond


class _ListHandler(logging.Handler):
    def __init__(self, records: list):
        super().__init__(level=logging.WARNING)
        self.records = records

    def emit(self, record):
        self.records.append(record.getMessage())


@contextmanager
def captured_warnings(logger_name: str = "diffusers"):
    """Collect the warnings a library logs (e.g. diffusers' truncation warning) into a list.

    Lesson 05, §6 catches the pipeline's truncation warning with it.

    Example::

        with captured_warnings() as messages:
            pipe(long_prompt, num_inference_steps=1)
        print(messages)

    Args:
        logger_name (`str`, defaults to ``"diffusers"``): the library's root logger.

    Yields:
        `list[str]`: filled with the message of each warning logged inside the block (they are still
        printed as usual).
    """
    messages: list[str] = []
    handler = _ListHandler(messages)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
