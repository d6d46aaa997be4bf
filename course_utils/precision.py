"""Training in half precision the way diffusers' training scripts do it (``examples/text_to_image/train_text_to_image_lora.py``).

1. The frozen model stays in half precision (float16 on a GPU): half the memory, tensor cores.
2. What trains is float32 (``diffusers.training_utils.cast_training_params``): the optimiser's arithmetic needs it.
   AdamW divides by ``sqrt(v) + eps`` with ``eps = 1e-8``, which is 0 in float16; a float16 weight whose first
   gradient is 0 (a LoRA's ``A``: its ``B`` starts at 0) gets ``0 / 0 = NaN`` at step 1, and every picture after
   it is black (lesson 10, exercise 4).
3. The forward pass runs under ``torch.autocast``: matrix products and convolutions in half precision, the
   float32 weights cast on the fly.
4. In float16 a ``torch.amp.GradScaler`` multiplies the loss before ``backward()`` so that small gradients do
   not round to 0, divides them back (``unscale_``) before clipping, and skips a step whose gradients
   overflowed (lowering the scale). bfloat16 has float32's range and needs none.

In float32 every helper here does nothing: the same code runs on a laptop CPU, where the course trains in float32.
Lesson 10 writes these steps out in its loop; ``new_concept``, ``text_embeddings`` and ``training/`` call them.
"""

import torch

# The GradScaler's first scale. Its default, 2**16, overflows in the first steps of the course's short runs
# and skips them until it has halved its way down; 2**10 (what the course used as a fixed scale before) does not.
INITIAL_LOSS_SCALE = 2.0**10


def is_half(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` is a half-precision float (float16 or bfloat16)."""
    return dtype in (torch.float16, torch.bfloat16)


def autocast(device: str | torch.device, dtype: torch.dtype) -> torch.autocast:
    """``torch.autocast`` for a forward pass in ``dtype`` on ``device``; switched off in float32.

    Args:
        device (`str` or `torch.device`): ``"cuda"``, ``"mps"`` or ``"cpu"`` (a ``cuda:0`` device counts as ``cuda``).
        dtype (`torch.dtype`): the model's half-precision dtype (float16 or bfloat16), or float32.
    """
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=is_half(dtype))


def grad_scaler(device: str | torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler`` that works in float16 and does nothing otherwise (bfloat16, float32).

    Args:
        device (`str` or `torch.device`): where the gradients are.
        dtype (`torch.dtype`): the dtype the forward pass computes in.
    """
    device_type = torch.device(device).type
    return torch.amp.GradScaler(device_type, init_scale=INITIAL_LOSS_SCALE, enabled=dtype == torch.float16)


def optimizer_step(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: list, max_norm: float | None = None
) -> torch.Tensor | None:
    """The end of a training step after ``scaler.scale(loss).backward()``: unscale, clip, step, update.

    Args:
        optimizer (`torch.optim.Optimizer`): steps ``params``.
        scaler (`torch.amp.GradScaler`): from :func:`grad_scaler` (disabled: a plain ``optimizer.step()``).
        params (`list[torch.nn.Parameter]`): what trains (for clipping).
        max_norm (`float`, *optional*): clip the gradients' total norm to this.

    Returns:
        `torch.Tensor` or `None`: the gradients' total norm before clipping (`None` without ``max_norm``); inf or
        NaN when the step was skipped because the gradients overflowed.
    """
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if max_norm is not None else None
    scaler.step(optimizer)  # skipped when a gradient is inf or NaN
    scaler.update()
    return norm
