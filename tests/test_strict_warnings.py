"""`make test` runs notebooks with COURSE_STRICT_WARNINGS=1: after `cu.setup()`, an outdated diffusers API fails the cell."""

import os
import subprocess
import sys

import pytest

CODE = """
import course_utils as cu
cu.setup()  # what every notebook calls first: it installs the warning filters
pipe = cu.load_pipeline("text2img", profile="tiny", device="cpu")
print(pipe.unet.config.in_channels)   # the current API: fine
print(getattr(pipe.unet, "in_channels"))  # deprecated attribute access (use .config): must raise under strict mode
"""


def run(strict: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("COURSE_STRICT_WARNINGS", None)
    if strict:
        env["COURSE_STRICT_WARNINGS"] = "1"
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_deprecated_api_fails_in_strict_mode():
    result = run(strict=True)
    assert result.returncode != 0
    assert "FutureWarning" in result.stderr and "in_channels" in result.stderr


@pytest.mark.slow
def test_same_code_only_warns_otherwise():
    result = run(strict=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["4", "4"]


def test_import_alone_changes_no_warning_filter():
    """Importing the package installs nothing global: only cu.setup() does."""
    code = (
        # the libraries set filters of their own when imported (diffusers' pipelines: one for torch.optim.lr_scheduler)
        "import logging, warnings, torch, transformers, diffusers.utils; from diffusers import StableDiffusionPipeline; "
        "before = list(warnings.filters); "
        "import course_utils as cu; cu.load_pipeline; cu.grid; cu.by_hand; cu.world; "
        "assert warnings.filters == before, 'import changed warnings.filters'; "
        "assert not logging.getLogger('transformers.utils.import_utils').filters; "
        "cu.setup(); assert warnings.filters != before; print('ok')"
    )
    env = dict(os.environ, COURSE_STRICT_WARNINGS="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "ok"


def test_import_is_cheap():
    """`import course_utils` imports neither torch nor diffusers (they load on first use)."""
    code = (
        "import sys, course_utils; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
