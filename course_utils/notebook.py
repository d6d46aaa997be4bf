"""What every notebook calls first: :func:`setup` quiets known library notes and prints the choice.

Importing ``course_utils`` changes nothing global; ``setup()`` is where a notebook opts in to
the course's warning and logging filters (and, under ``make test``, to strict warnings).
"""

import logging
import os
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported in setup(), after the filters
    from .models.registry import Choice


def _not_torchvision_note(record: logging.LogRecord) -> bool:
    return "requires torchvision (not installed)" not in record.getMessage()


def _not_empty_fp32_note(record: logging.LogRecord) -> bool:
    return "should be kept in float32: []" not in record.getMessage()


def quiet_log_notes() -> None:
    """Only the logging filters of :func:`quiet_library_notes` (the "requires torchvision" and empty "keep in float32"
    notes), without touching warnings: what ``python -m course_utils`` installs before any command imports a library."""
    for name, note in (
        ("transformers.utils.import_utils", _not_torchvision_note),
        ("diffusers.models.modeling_utils", _not_empty_fp32_note),
    ):
        logger = logging.getLogger(name)
        if note not in logger.filters:
            logger.addFilter(note)


def quiet_library_notes() -> None:
    """Install the course's filters for notes that are harmless here (called by :func:`setup`).

    * transformers 5 says once that ``CLIPImageProcessor`` "requires torchvision" and falls back to
      its PIL twin. The course does not install torchvision off Colab (it pulls a multi-GB CUDA
      torch), and the PIL processor does the same job for the safety checker.
    * diffusers' ``ModelMixin.to`` warns that a model has "modules ... that should be kept in float32: []"
      whenever it is given a dtype, even when that list is empty (it tests ``fp32_modules is not None``
      after ``fp32_modules = self._keep_in_fp32_modules or []``), and ``from_pipe`` always calls
      ``.to(dtype=...)``. SD 1.5's models keep no module in float32, so the note with ``[]`` says
      nothing; a note naming real modules still shows.
    * torch 2.13's ``Tensor.__array__`` lacks numpy 2's ``copy`` keyword, which numpy reports when
      diffusers' schedulers (DPM-Solver, Euler, ...) call ``np.array`` on a tensor: not an outdated
      API of ours.
    * With ``COURSE_STRICT_WARNINGS`` set (``make test`` sets it), every ``FutureWarning`` and every
      ``DeprecationWarning`` from diffusers, transformers, huggingface_hub or the notebook becomes an
      error, so an outdated API fails the run.
    """
    quiet_log_notes()
    if os.environ.get("COURSE_STRICT_WARNINGS"):
        warnings.filterwarnings("error", category=FutureWarning)
        warnings.filterwarnings(
            "error", category=DeprecationWarning, module=r"(diffusers|transformers|huggingface_hub|__main__)"
        )
    warnings.filterwarnings(
        "ignore", message="__array__ implementation doesn't accept a copy keyword", category=DeprecationWarning
    )


def setup(role: str = "text2img") -> "Choice":
    """Prepare a notebook: install the course's warning filters, then print and return the choice.

    Args:
        role (`str`, defaults to ``"text2img"``): the role whose `sd15` model decides whether the
            real weights are reachable (see ``course_utils.models.registry.choose``).

    Returns:
        `course_utils.models.registry.Choice`: ``profile``, ``device``, ``dtype`` and the ``reason``, also printed as one line.
    """
    quiet_library_notes()
    from .models.registry import choose  # after the filters: importing diffusers' pipelines logs the torchvision note

    choice = choose(role)
    print("course_utils:", choice)
    return choice
