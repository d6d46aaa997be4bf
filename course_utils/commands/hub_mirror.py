"""A local Hugging Face Hub mirror of the `sd15` profile's repositories: lookalikes behind a real mirror server.

``python -m course_utils hub --serve`` builds the lookalike repositories
(``course_utils.models.lookalike``: the real repos' ids, types, file names and layout, with small -
or, with ``--size full``, full-size - random weights) and serves them with **olah**, an open-source
Hub mirror, on ``127.0.0.1``. Every client that reads ``HF_ENDPOINT`` (huggingface_hub, diffusers,
transformers, the course) then downloads from it exactly as from the Hub::

    python -m course_utils hub --serve --port 8090        # prints HF_ENDPOINT=http://127.0.0.1:8090
    HF_ENDPOINT=http://127.0.0.1:8090 COURSE_PROFILE=sd15 jupyter lab

olah serves git repositories laid out as ``<mirrors>/<models|datasets>/<org>/<name>`` (branch
``main``) with ``[accessibility] offline = true``: nothing is fetched from the real Hub.

``python -m course_utils hub --serve --room`` is the workshop's *room mirror*: the same server with
``offline = false`` in front of an upstream (``https://huggingface.co`` by default; any Hub or Hub
mirror, olah's ``hf-scheme`` / ``hf-netloc`` / ``hf-lfs-netloc``), listening on every interface and
keeping every file it passes on in a cache folder (olah's ``repos-path``). The first seat that asks
for a file fetches it once; every other seat then gets it from the room machine. olah 0.5.4 still asks
the upstream for each request's metadata while online (a stopped upstream gives 504s, even for cached
files), so when the room loses its link, restart it with ``--offline``: the same cache, served with
``offline = true``, upstream never asked. ``docs/instructors.md`` shows both in use.

olah lives in its own virtual environment (``.venv-hub``, made by ``make``: its dependency
fastapi-utils pins ``psutil<6``, which the notebook kernel's IPython refuses).
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import CourseError
from ..models.hub import SD15_REPOS
from ..paths import ROOT

OLAH_VENV = ROOT / ".venv-hub"  # made by `make` (requirements-hub.txt)
PROBE_REPO = SD15_REPOS["text2img"]  # asked for until the server answers
HUB_URL = "https://huggingface.co"  # the room mirror's default upstream


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


def write_config(root: Path, port: int, mirrors: Path | None = None) -> Path:
    """olah's settings for serving ``mirrors`` (default ``root/mirrors``) offline on ``127.0.0.1:port``; returns the
    ``.toml`` file."""
    root = Path(root)
    mirrors = Path(mirrors) if mirrors else root / "mirrors"
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{root / "cache"}"\n'  # olah's own cache (unused offline)
        f'mirrors-path = ["{mirrors}"]\n'  # the lookalike git repositories
        "\n[accessibility]\n"
        "offline = true\n"  # never ask the real Hub
    )
    return config


def write_room_config(
    root: Path,
    port: int,
    host: str = "0.0.0.0",
    upstream: str = HUB_URL,
    public_host: str | None = None,
    offline: bool = False,
) -> Path:
    """olah's settings for a caching room mirror in front of ``upstream``; returns the ``.toml`` file.

    Args:
        root (`Path`): the working folder; the cache is ``root/cache`` (olah's ``repos-path``).
        port (`int`): the port to listen on.
        host (`str`, defaults to ``"0.0.0.0"``): the interface to listen on (``0.0.0.0``: every seat in the room).
        upstream (`str`, defaults to ``"https://huggingface.co"``): the Hub, or another mirror, to fetch from.
        public_host (`str`, *optional*): the name or address seats use (olah shows it on its index page).
        offline (`bool`, defaults to `False`): serve only what the cache holds, never asking the upstream.

    Returns:
        `Path`: ``root/olah.toml``.
    """
    root = Path(root)
    url = urllib.parse.urlsplit(upstream.rstrip("/"))
    if url.scheme not in ("http", "https") or not url.netloc:
        raise CourseError(f"--upstream {upstream!r} is not a URL like https://huggingface.co or http://10.0.0.2:8090.")
    # The real Hub sends large files through its CDN; any other upstream serves them itself.
    lfs = "cdn-lfs.huggingface.co" if url.netloc == "huggingface.co" else url.netloc
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "{host}"\n'
        f"port = {port}\n"
        f'repos-path = "{root / "cache"}"\n'  # every file passed on is kept here
        f'hf-scheme = "{url.scheme}"\n'
        f'hf-netloc = "{url.netloc}"\n'
        f'hf-lfs-netloc = "{lfs}"\n'
        f'mirror-netloc = "{public_host or "localhost"}:{port}"\n'
        "\n[accessibility]\n"
        f"offline = {str(offline).lower()}\n"  # false: ask the upstream for what the cache lacks (and for metadata)
    )
    return config


def wait_until_up(endpoint: str, process: subprocess.Popen, timeout: float = 60.0, path: str | None = None) -> None:
    """Block until the mirror answers (or raise when it died or ``timeout`` passed).

    Args:
        endpoint (`str`): e.g. ``"http://127.0.0.1:8090"``.
        process (`subprocess.Popen`): the server; its exit ends the wait with an error.
        timeout (`float`, defaults to 60): seconds.
        path (`str`, *optional*): what to ask for, any HTTP answer counting (e.g. a 404 from a path
            olah has no route for); default the revision of :data:`PROBE_REPO`, which must answer 200.
    """
    url = endpoint + (path or f"/api/models/{PROBE_REPO}/revision/main")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CourseError(f"olah exited with code {process.returncode} before answering; see its log.")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError:
            if path:  # the server answered
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise CourseError(f"The mirror did not answer {url} within {timeout:.0f} s.")


def start(
    root, size: str = "small", port: int | None = None, log=None, repos=None, mirrors=None
) -> tuple[subprocess.Popen, str]:
    """Build the lookalikes under ``root`` (first use only) and start olah on them.

    Args:
        root (`str` or `Path`): a working folder: ``mirrors/`` (the git repositories), ``olah.toml``, ``logs/``.
        size (`str`, defaults to ``"small"``): ``"small"`` (CPU-sized weights) or ``"full"`` (SD 1.5's sizes).
        port (`int`, *optional*): default a free port.
        log (file, *optional*): where olah's output goes (default ``root/olah.log``).
        repos (iterable of `str`, *optional*): build only these lookalikes (``()``: none, e.g. a server that only
            has to answer or to fail); default all.
        mirrors (`str` or `Path`, *optional*): serve this folder of repositories, built already (e.g. the tests'
            one build per run), instead of building into ``root/mirrors``.

    Returns:
        `tuple[subprocess.Popen, str]`: the server process (stop it with ``.terminate()``) and its
        ``HF_ENDPOINT``, e.g. ``"http://127.0.0.1:8090"``.
    """
    from ..models.lookalike import build_lookalikes

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    built = {}
    if mirrors is None:
        built = build_lookalikes(root / "mirrors", size=size, repos=repos)
    port = port or free_port()
    probe = None if mirrors is not None or PROBE_REPO in built else "/course-probe"  # any answer: nothing to serve yet
    return launch(root, write_config(root, port, mirrors), f"http://127.0.0.1:{port}", log, probe=probe)


def launch(root: Path, config: Path, endpoint: str, log=None, probe: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start olah with ``config`` in ``root`` and wait until ``endpoint`` answers ``probe`` (see :func:`wait_until_up`).

    Returns:
        `tuple[subprocess.Popen, str]`: the server process and ``endpoint``.
    """
    with contextlib.ExitStack() as files:  # a log file opened here is the child's; the parent closes its copy
        log = log or files.enter_context(open(root / "olah.log", "ab"))
        process = subprocess.Popen(
            olah_command() + ["-c", str(config), "--log-path", str(root / "logs")],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(endpoint, process, path=probe)
    except BaseException:
        process.kill()
        raise
    return process, endpoint


def start_room(
    root,
    upstream: str = HUB_URL,
    host: str = "0.0.0.0",
    port: int | None = None,
    public_host: str | None = None,
    offline: bool = False,
    log=None,
) -> tuple[subprocess.Popen, str]:
    """Start a caching room mirror: olah in front of ``upstream`` (or, ``offline``, its cache only), the cache in ``root/cache``.

    Args:
        root (`str` or `Path`): a working folder: ``cache/`` (every file served so far), ``olah.toml``, ``logs/``.
        upstream (`str`, defaults to ``"https://huggingface.co"``): the Hub or another mirror.
        host (`str`, defaults to ``"0.0.0.0"``): the interface to listen on; ``127.0.0.1`` for this machine only.
        port (`int`, *optional*): default a free port.
        public_host (`str`, *optional*): the address seats use; default :func:`room_address`.
        offline (`bool`, defaults to `False`): serve the cache only (the room has lost its link to the upstream).
        log (file, *optional*): where olah's output goes (default ``root/olah.log``).

    Returns:
        `tuple[subprocess.Popen, str]`: the server process and the ``HF_ENDPOINT`` seats set,
        e.g. ``"http://192.168.1.20:8090"``. The server answers before it has asked the upstream
        anything, so a room mirror starts even while the upstream is down.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    public_host = public_host or (host if host not in ("0.0.0.0", "::") else room_address())
    config = write_room_config(root, port, host, upstream, public_host, offline)
    process, _ = launch(
        root,
        config,
        f"http://127.0.0.1:{port}" if host in ("0.0.0.0", "::") else f"http://{host}:{port}",
        log,
        probe="/course-probe",
    )  # no such route: a 404 that asks the upstream nothing
    return process, f"http://{public_host}:{port}"


def room_address() -> str:
    """This machine's address on the local network (the one a route to the outside would use), else ``127.0.0.1``.

    Nothing is sent: connecting a UDP socket only picks the interface.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


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
    return wait_then_stop(process)


def wait_then_stop(process: subprocess.Popen) -> int:
    """Wait for the server; on Ctrl-C or SIGTERM stop it too, so that no olah outlives this command."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(process)
    return 0


def serve_room(
    root,
    upstream: str = HUB_URL,
    host: str = "0.0.0.0",
    port: int | None = None,
    public_host: str | None = None,
    offline: bool = False,
) -> int:
    """Serve a caching room mirror until Ctrl-C (``python -m course_utils hub --serve --room``).

    Prints the ``HF_ENDPOINT`` every seat sets. See :func:`start_room` for the arguments.
    """
    process, endpoint = start_room(root, upstream, host, port, public_host, offline, log=sys.stdout.buffer)
    what = "serving its cache only (--offline)" if offline else f"in front of {upstream}"
    print(f"Room mirror {what}; cache in {Path(root).resolve() / 'cache'}", flush=True)
    print(f"On every seat: export HF_ENDPOINT={endpoint}", flush=True)
    return wait_then_stop(process)
