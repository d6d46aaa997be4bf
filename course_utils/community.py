"""Community models: what lesson 07 derives about embeddings and style prompts.

Where the lesson's files come from (Counterfeit-V2.5's single file, EasyNegative, the LCM LoRA on
`sd15`; the course's outline-style models on `tiny`) is the model layer's business:
``course_utils.models.files``. Single-file checkpoints have their own module, ``single_file``.
"""

from pathlib import Path

import torch
from safetensors.torch import load_file

from .errors import CourseError
from .models import tiny


def style_prompt(prompt: str, word: str = tiny.STYLE_WORD) -> str:
    """``prompt`` with a style's trigger word in front, as the `tiny` community fine-tune was trained (lesson 07, §1).

    On `tiny` the word goes first because CLIP's text encoder is causal: a token changes only the tokens
    after it, so a word at the end leaves the prompt's own tokens exactly as they were, and `tiny`'s UNet
    reads mostly the padding, which such a word hardly moves (measured in the appendix "Inside the teaching
    models", "From lesson 07").

    Args:
        prompt (`str`): e.g. ``"a red circle on a white background"``.
        word (`str`, defaults to ``"outline"``): the trigger word (or an embedding's token, §5).

    Returns:
        `str`: e.g. ``"outline style, a red circle on a white background"``.
    """
    return tiny.style_prompt(prompt, word)


def embedding_prompt(prompt: str, token: str = tiny.EMBEDDING_TOKEN) -> str:
    """``prompt`` with a textual-inversion token alone in front, as `tiny`'s ``<outline>`` was trained (lesson 07, §5).

    Not in the fine-tune's ``"<word> style, "`` pattern: `tiny`'s community model draws outlines for that
    pattern whatever the word, so there the embedding's vectors would not matter.

    Args:
        prompt (`str`): e.g. ``"a red circle on a white background"``.
        token (`str`, defaults to ``"<outline>"``): the embedding's token.

    Returns:
        `str`: e.g. ``"<outline>, a red circle on a white background"``.
    """
    return tiny.embedding_prompt(prompt, token)


def embedding_vectors(path) -> torch.Tensor:
    """The vectors of an A1111-format textual-inversion file (lesson 07, §5).

    Such a ``.safetensors`` file holds ONE tensor of shape ``[n_vectors, hidden_size]``; A1111 calls
    it ``emb_params`` (EasyNegative and `tiny`'s ``<outline>`` do), but the name is not checked by
    diffusers when ``token=`` is given, so any single key is read.

    Args:
        path (`str` or `Path`): the ``.safetensors`` embedding.

    Returns:
        `torch.Tensor`: ``[n_vectors, hidden_size]``.

    Raises:
        CourseError: the file holds no tensor or several (then it is not a one-token embedding).
    """
    tensors = load_file(str(path))
    if len(tensors) != 1:
        raise CourseError(
            f"{Path(path).name} holds {len(tensors)} tensors ({sorted(tensors)}); an A1111 embedding holds one, [n_vectors, hidden_size]."
        )
    (vectors,) = tensors.values()
    return vectors if vectors.ndim == 2 else vectors.reshape(-1, vectors.shape[-1])
