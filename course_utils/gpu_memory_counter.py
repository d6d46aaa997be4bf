"""A fake GPU that counts: run work on tensors without numbers and read its peak memory (for ``gpu_memory``).

A GPU answers "how much memory does this take?" by running the work and reading
``torch.cuda.max_memory_allocated()``. This module answers it without one:

1. **Fake tensors.** Models built on PyTorch's ``meta`` device (shapes only) get, for every parameter and buffer, a
   ``FakeTensor`` (``torch._subclasses.FakeTensorMode``): a tensor with a shape, dtype and device but no numbers.
   Every operation still runs its shape logic and picks the kernel its device would; in particular attention goes
   through a fused kernel that never stores the ``N x N`` attention matrix, as PyTorch's flash / memory-efficient
   attention does on CUDA.
2. **Counting.** :class:`MemoryCounter`, a ``TorchDispatchMode``, sees every tensor each operation creates and adds
   its storage's size, rounded up to 512 bytes as CUDA's caching allocator rounds every block, until Python frees
   the storage. The largest total is the estimate of ``max_memory_allocated``: weights, activations kept for the
   backward pass, gradients, optimiser state, the batch.

:func:`estimate` puts both together. The models and the work they run are in :mod:`course_utils.gpu_memory_work`;
every lesson's estimate in :mod:`course_utils.gpu_memory`.
"""

import contextlib
import math
import time
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2**30
BLOCK = 512  # CUDA's caching allocator rounds every allocation up to a multiple of 512 bytes


class MemoryCounter(TorchDispatchMode):
    """Counts the bytes of every tensor storage that PyTorch operations create, from creation until it is freed.

    Attributes:
        live (`int`): bytes in use now (each storage rounded up to :data:`BLOCK`).
        peak (`int`): the most ``live`` has been since the start or :meth:`reset_peak`.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages = {}  # id(storage) -> a weak reference whose callback subtracts its bytes

    def reset_peak(self) -> None:
        """Start a new peak window (as ``torch.cuda.reset_peak_memory_stats``): ``peak`` becomes ``live``."""
        self.peak = self.live

    def count(self, tensor: torch.Tensor) -> None:
        """Add ``tensor``'s storage (once) and subtract it when Python frees it.

        Args:
            tensor (`torch.Tensor`): any shape; a view of a storage already counted adds nothing.
        """
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._storages:
            return
        nbytes = math.ceil(storage.nbytes() / BLOCK) * BLOCK
        self.live += nbytes
        self.peak = max(self.peak, self.live)

        def freed(_, nbytes=nbytes, key=key):
            self.live -= nbytes
            self._storages.pop(key, None)

        self._storages[key] = weakref.ref(storage, freed)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.count(value)
        return out


@contextlib.contextmanager
def fake_gpu():
    """A context in which new tensors are fake (no numbers, no memory) and counted.

    Build models on ``torch.device("meta")`` outside it, then :func:`on_fake_device` (or :func:`load`) inside it.

    Yields:
        :class:`MemoryCounter`: its ``live`` and ``peak`` count every tensor created inside the context.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    # allow_non_fake_inputs: schedulers' real constant tensors (timesteps, alphas) may meet fake ones
    with FakeTensorMode(allow_non_fake_inputs=True), MemoryCounter() as counter:
        yield counter


def on_fake_device(module: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter and buffer of a ``meta`` module a fake CPU tensor of its shape and dtype.

    Call it inside :func:`fake_gpu`, so the weights are counted. Parameters keep ``requires_grad``. (A module's
    ``.to()`` cannot do this: on fake tensors it must swap tensors, which their bookkeeping forbids.)

    Args:
        module (`torch.nn.Module`): built on the ``meta`` device.

    Returns:
        `torch.nn.Module`: the same module, changed in place.
    """
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = torch.nn.Parameter(
                    torch.empty(param.shape, dtype=param.dtype), requires_grad=param.requires_grad
                )
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype)
    return module


def load(parts: dict) -> dict:
    """Put every model of ``parts`` on the fake GPU (inside :func:`fake_gpu`; their weights are counted).

    Args:
        parts (`dict`): names to ``meta`` models, or to dicts of them (several pipelines:
            ``{"pipe": {...}, "fresh": {...}}``).

    Returns:
        `dict`: ``parts``, its models changed in place.
    """
    for value in parts.values():
        load(value) if isinstance(value, dict) else on_fake_device(value)
    return parts


@dataclass
class Estimate:
    """One estimate of :func:`estimate`.

    Attributes:
        peak_gib (`float`): the whole peak, in GiB (2 decimals).
        weights_gib (`float`): what was resident before the work started (the loaded models), in GiB.
        seconds (`float`): how long the estimate took on this machine.
    """

    peak_gib: float
    weights_gib: float
    seconds: float


def estimate(parts: dict, work: Callable[[dict], None], prepare: Callable[[dict], None] | None = None) -> Estimate:
    """Load ``parts`` on the fake GPU, run ``work`` on them and return the peak.

    Args:
        parts (`dict`): every model the cell holds on the GPU, on ``meta`` (``gpu_memory_work.pipeline_parts``; a
            second pipeline's models under other names).
        work (`Callable[[dict], None]`): the cell's heaviest work, e.g. ``lambda m: generate(m, images=4)``.
        prepare (`Callable[[dict], None]`, *optional*): what happens before loading, e.g.
            ``gpu_memory_work.add_lora``.

    Returns:
        :class:`Estimate`: the peak and the weights in GiB, and the seconds it took.
    """
    start = time.perf_counter()
    if prepare is not None:
        prepare(parts)
    with fake_gpu() as counter:
        load(parts)
        weights = counter.live
        work(parts)
        peak = counter.peak
    return Estimate(round(peak / GIB, 2), round(weights / GIB, 2), round(time.perf_counter() - start, 1))
