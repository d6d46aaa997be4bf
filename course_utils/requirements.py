"""The course's requirement pins, read in one place: ``requirements.txt`` (what Colab and ``make install`` install)
and ``pyproject.toml``'s ``dependencies`` (what ``pip install .`` installs). ``tests/test_requirements.py`` checks
that the two agree. No third-party import: ``doctor`` and ``tools/gpu_check.py`` run it on a bare machine.
"""

import re
import tomllib
from pathlib import Path

from .paths import ROOT

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*((?:[<>=!~]=?|===).*)?$")


def canonical(name: str) -> str:
    """A distribution's name as pip compares names (PEP 503): ``"Huggingface_Hub"`` -> ``"huggingface-hub"``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(lines) -> dict[str, str]:
    """``{canonical name: specifier}`` of requirement lines (comments, blank lines and ``-r``/``-e`` options skipped).

    Args:
        lines (iterable of `str`): e.g. ``["diffusers==0.42.1", "ipywidgets>=7.7,<9  # Colab's"]``.

    Returns:
        `dict[str, str]`: e.g. ``{"diffusers": "==0.42.1", "ipywidgets": ">=7.7,<9"}`` (``""`` for a bare name).
    """
    pins = {}
    for line in lines:
        match = REQUIREMENT.match(line.split("#")[0].rstrip())
        if match:
            pins[canonical(match.group(1))] = (match.group(2) or "").replace(" ", "")
    return pins


def requirement_pins(path=ROOT / "requirements.txt") -> dict[str, str]:
    """:func:`parse` of a requirements file (default ``requirements.txt``); empty if it is absent."""
    try:
        return parse(Path(path).read_text().splitlines())
    except OSError:
        return {}


def pyproject_dependencies(path=ROOT / "pyproject.toml") -> dict[str, str]:
    """:func:`parse` of ``[project] dependencies`` in ``pyproject.toml``."""
    return parse(tomllib.loads(Path(path).read_text())["project"]["dependencies"])
