"""One line of ``doctor``'s report: what was checked, what was found, and what to do."""

from dataclasses import dataclass


@dataclass
class Check:
    """One line of the report.

    Attributes:
        section (`str`): ``"device"``, ``"memory"``, ``"profile"``, ``"models"``, ``"libraries"`` or ``"widgets"``.
        name (`str`): what was checked, e.g. ``"torch"`` or a repository id.
        detail (`str`): what was found.
        status (`str`): ``"ok"``, ``"warning"`` or ``"problem"``.
        fix (`str`): what to do (empty when ``ok``).
    """

    section: str
    name: str
    detail: str
    status: str = "ok"
    fix: str = ""

    def __str__(self) -> str:
        verdict = {"ok": "OK", "warning": "WARNING", "problem": "PROBLEM"}[self.status]
        return f"  {self.name:<34} {self.detail}  -> {verdict}{': ' + self.fix if self.fix else ''}"
