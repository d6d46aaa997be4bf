"""The `sd15` repositories and files on this seat, for ``doctor``: ``local``, ``cached``, ``reachable``, ``missing``.

Each is looked up with the model layer's own functions (:mod:`course_utils.models.hub`), as the course loads it:
``COURSE_MODELS_DIR``, then the Hub cache, then ``HF_ENDPOINT``; a role's known copies in the same order.
"""

import os
from pathlib import Path

from ..errors import CourseError
from ..models import hub
from .checks import Check


def repo_status(repo_id: str, variant: str | None = None, timeout: float = 5.0, ask: bool = True) -> tuple[str, str]:
    """Where a pipeline repository would come from: ``local``, ``cached``, ``reachable``, ``missing`` or ``unreachable``.

    Args:
        repo_id (`str`): a Hub id, e.g. ``hub.SD15_REPOS["text2img"]``.
        variant (`str`, *optional*): the weights the course would load (``"fp16"`` on CUDA).
        timeout (`float`, defaults to 5): seconds to wait for the Hub.
        ask (`bool`, defaults to `True`): `False` skips the network (after an earlier repository found
            the Hub unreachable) and answers ``unreachable``.

    Returns:
        `tuple[str, str]`: the status and a detail (the folder, or the error's first line).
    """
    try:
        source = hub.resolve_model(repo_id, check_hub=False, variant=variant)
    except CourseError:  # HF_HUB_OFFLINE=1 and neither local nor cached
        return "unreachable", "HF_HUB_OFFLINE is set and it is not cached"
    if source != repo_id:
        return ("local" if hub.local_folder(repo_id) else "cached"), source
    return ask_hub(repo_id, timeout=timeout) if ask else ("unreachable", "not asked: the Hub did not answer before")


def file_status(
    repo_id: str, filename: str, repo_type: str = "model", timeout: float = 5.0, ask: bool = True
) -> tuple[str, str]:
    """Like :func:`repo_status`, for one file (lesson 7's checkpoint, EasyNegative, the LCM-LoRA)."""
    from huggingface_hub import try_to_load_from_cache

    local = os.environ.get("COURSE_MODELS_DIR")
    if local and (Path(local) / repo_id / filename).is_file():
        return "local", str(Path(local) / repo_id / filename)
    cached = try_to_load_from_cache(repo_id, filename, repo_type=repo_type)
    if isinstance(cached, str):
        return "cached", cached
    if hub.hub_offline():
        return "unreachable", "HF_HUB_OFFLINE is set and it is not cached"
    return (
        ask_hub(repo_id, filename, repo_type, timeout)
        if ask
        else ("unreachable", "not asked: the Hub did not answer before")
    )


def ask_hub(
    repo_id: str, filename: str | None = None, repo_type: str = "model", timeout: float = 5.0
) -> tuple[str, str]:
    """Ask ``HF_ENDPOINT`` whether it has ``repo_id`` (or one file of it): ``reachable``, ``missing`` or ``unreachable``.

    Errors are classified by :func:`course_utils.models.hub.course_error`, exactly as when the course loads.
    """
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    try:
        if filename:
            get_hf_file_metadata(hf_hub_url(repo_id, filename, repo_type=repo_type), timeout=timeout)
        else:  # revision="main": the route both the Hub and a mirror such as olah answer
            HfApi().repo_info(repo_id, repo_type=repo_type, revision="main", timeout=timeout)
    except Exception as err:  # missing repository; or DNS failure, refused connection, timeout, proxy error ...
        error = hub.course_error(repo_id, err)
        return ("missing" if isinstance(error, hub.RepoMissing) else "unreachable"), f"{type(err).__name__}"
    return "reachable", "on " + hub_endpoint()


def hub_endpoint() -> str:
    """The Hub (or mirror) huggingface_hub talks to: ``HF_ENDPOINT`` or ``https://huggingface.co``."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def check_models(timeout: float = 5.0) -> list[Check]:
    """Each `sd15` repository (:data:`~course_utils.models.hub.SD15_REPOS`) and the single files
    (:data:`~course_utils.models.hub.SINGLE_FILES`: lesson 7's, lesson 11's ControlNet).

    A role with known copies (:func:`course_utils.models.hub.repo_ids`: ``COURSE_HUB_<ROLE>``, else the
    official repository then :data:`~course_utils.models.hub.KNOWN_COPIES`) is looked up copy by copy, as
    the course loads it: a ``missing`` repository moves on to the next copy, and the line names the one
    that would be used. After the first ``unreachable`` answer from the network the others are not
    asked, so a seat with no network answers within one ``timeout``.

    Returns:
        `list[Check]`: one line per repository or file, in the ``"models"`` section.
    """
    import torch

    variant = "fp16" if torch.cuda.is_available() else None  # what load_pipeline asks for (the folder decides)
    checks, ask, seen = [], True, set()
    for role in hub.SD15_REPOS:
        ids = hub.repo_ids(role)
        if ids[0] in seen:  # text2img and img2img load the same repository
            continue
        seen.add(ids[0])
        for repo in ids:  # first every copy's local folder and the cache (no network), as hub.find does
            status, detail = repo_status(repo, variant, timeout, ask=False)
            if status in ("local", "cached"):
                break
        else:  # then the Hub, copy by copy, until one is not missing
            tried = []
            for repo in ids:
                status, detail = repo_status(repo, variant, timeout, ask)
                ask = ask and status != "unreachable"  # one timeout is enough to know
                if status != "missing":
                    break
                tried.append(repo)
            if tried and status != "missing":
                detail += f"; {', '.join(tried)} missing, so the course uses this copy"
        if repo != ids[0] and status in ("local", "cached"):
            detail += f"; a copy of {ids[0]}"
        checks.append(_check(repo, status, detail, role, checks))
    for repo, filename, repo_type, role in hub.SINGLE_FILES:
        status, detail = file_status(repo, filename, repo_type, timeout, ask)
        ask = ask and status != "unreachable"
        checks.append(_check(f"{repo}/{filename}", status, detail, role, checks))
    return checks


def _check(name: str, status: str, detail: str, role: str, earlier: list[Check]) -> Check:
    """One report line: ``ok`` for local/cached/reachable, else a warning with what to do (once, then "as above")."""
    fix = {
        "missing": f"the Hub has no such thing; point the role elsewhere with COURSE_HUB_{role.upper()}=<org>/<name>",
        "unreachable": "for sd15: set HF_ENDPOINT (room mirror) or COURSE_MODELS_DIR; tiny needs nothing",
    }.get(status, "")
    if earlier and status == "unreachable" and earlier[-1].fix in (fix, "as above"):
        fix = "as above"
    return Check("models", name, f"{status} ({detail})", "warning" if fix else "ok", fix)
