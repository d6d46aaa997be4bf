"""`make test` runs notebooks with COURSE_STRICT_WARNINGS=1: an outdated diffusers API must then fail the cell."""
import os
import subprocess
import sys

CODE = """
import course_utils as cu
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


def test_deprecated_api_fails_in_strict_mode():
    result = run(strict=True)
    assert result.returncode != 0
    assert "FutureWarning" in result.stderr and "in_channels" in result.stderr


def test_same_code_only_warns_otherwise():
    result = run(strict=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["4", "4"]
