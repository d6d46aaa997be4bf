"""A local Hugging Face Hub mirror of the `sd15` profile's repositories: lookalikes behind a real mirror server.

``python -m course_utils hub --serve`` builds the lookalike repositories
(``course_utils.models.lookalike``: the real repos' ids, types, file names and layout, with small -
or, with ``--size full``, full-size - random weights) and serves them with **olah**, an open-source
Hub mirror, on ``127.0.0.1``. Every client that reads ``HF_ENDPOINT`` (huggingface_hub, diffusers,
transformers, the course) then downloads from it exactly as from the Hub::

    python -m course_utils hub --serve --port 8090        # prints HF_ENDPOINT=http://127.0.0.1:8090
    HF_ENDPOINT=http://127.0.0.1:8090 COURSE_PROFILE=sd15 jupyter lab

olah serves git repositories laid out as ``<mirrors>/<models|datasets>/<org>/<name>`` (branch
``main``) with ``[accessibility] offline = true``: nothing is fetched from the real Hub. A room
mirror for a workshop is the same server with ``offline = false`` in front of the real Hub (see
olah's documentation). olah lives in its own virtual environment (``.venv-hub``, made by ``make``:
its dependency fastapi-utils pins ``psutil<6``, which the notebook kernel's IPython refuses).
"""
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .errors import CourseError
from .models.hub import SD15_REPOS
from .paths import ROOT

OLAH_VENV = ROOT / ".venv-hub"  # made by `make` (requirements-hub.txt)
PROBE_REPO = SD15_REPOS["text2img"]  # asked for until the server answers


def olah_command() -> list[str]:
    """The command that starts olah: ``COURSE_OLAH``, else ``.venv-hub/bin/olah-cli``, else ``olah-cli`` on the PATH.

    Raises:
        CourseError: olah is not installed, with how to install it.
    """
    for candidate in (os.environ.get("COURSE_OLAH"), OLAH_VENV / "bin" / "olah-cli", shutil.which("olah-cli")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    raise CourseError(
        "The Hub mirror needs olah (a Hugging Face Hub mirror server), which is not installed. Run `make hub` "
        f"(it makes {OLAH_VENV.name}/ with `pip install -r requirements-hub.txt`), or install olah into a separate "
        "virtual environment and set COURSE_OLAH=/path/to/olah-cli."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path, port: int) -> Path:
    """olah's settings for serving ``root/mirrors`` offline on ``127.0.0.1:port``; returns the ``.toml`` file."""
    root = Path(root)
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{root / "cache"}"\n'  # olah's own cache (unused offline)
        f'mirrors-path = ["{root / "mirrors"}"]\n'  # the lookalike git repositories
        "\n[accessibility]\n"
        "offline = true\n"  # never ask the real Hub
    )
    return config


def wait_until_up(endpoint: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until the mirror answers for :data:`PROBE_REPO` (or raise when it died or ``timeout`` passed)."""
    url = f"{endpoint}/api/models/{PROBE_REPO}/revision/main"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CourseError(f"olah exited with code {process.returncode} before answering; see its log.")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise CourseError(f"The mirror did not answer {url} within {timeout:.0f} s.")


def start(root, size: str = "small", port: int | None = None, log=None) -> tuple[subprocess.Popen, str]:
    """Build the lookalikes under ``root`` (first use only) and start olah on them.

    Args:
        root (`str` or `Path`): a working folder: ``mirrors/`` (the git repositories), ``olah.toml``, ``logs/``.
        size (`str`, defaults to ``"small"``): ``"small"`` (CPU-sized weights) or ``"full"`` (SD 1.5's sizes).
        port (`int`, *optional*): default a free port.
        log (file, *optional*): where olah's output goes (default ``root/olah.log``).

    Returns:
        `tuple[subprocess.Popen, str]`: the server process (stop it with ``.terminate()``) and its
        ``HF_ENDPOINT``, e.g. ``"http://127.0.0.1:8090"``.
    """
    from .models.lookalike import build_lookalikes

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    build_lookalikes(root / "mirrors", size=size)
    port = port or free_port()
    config = write_config(root, port)
    with contextlib.ExitStack() as files:  # a log file opened here is the child's; the parent closes its copy
        log = log or files.enter_context(open(root / "olah.log", "ab"))
        process = subprocess.Popen(olah_command() + ["-c", str(config), "--log-path", str(root / "logs")],
                                   cwd=root, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(endpoint, process)
    except BaseException:
        process.kill()
        raise
    return process, endpoint


@contextlib.contextmanager
def running(root, size: str = "small", port: int | None = None):
    """``with running(root) as endpoint:`` a mirror for the duration of the block (tests use this)."""
    process, endpoint = start(root, size, port)
    try:
        yield endpoint
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve(root, size: str = "small", port: int | None = None) -> int:
    """Serve until Ctrl-C, printing the ``HF_ENDPOINT`` to set (``python -m course_utils hub --serve``)."""
    process, endpoint = start(root, size, port, log=sys.stdout.buffer)
    print(f"Serving the sd15 lookalike repositories ({size}) from {Path(root).resolve() / 'mirrors'}", flush=True)
    print(f"HF_ENDPOINT={endpoint}", flush=True)
    try:
        process.wait()
    except KeyboardInterrupt:
        stop(process)
    return 0
