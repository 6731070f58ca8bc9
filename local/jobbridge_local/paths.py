"""Where the local stack finds template.yaml and keeps its state (docs/CONTRACTS.md, "Local stack")."""

from __future__ import annotations

import json
import os
from pathlib import Path

TEMPLATE_FILE = "template.yaml"
STATE_SUBDIR = Path(".jobbridge") / "local"
STACK_FILE = "stack.json"


def project_root(start: Path | None = None) -> Path:
    """The directory holding template.yaml.

    Walks up from ``start`` (default: the working directory) so commands work from any
    sub-folder; falls back to the checkout this package sits in (``local/jobbridge_local``
    -> the repository root), which is where an editable install points.
    """
    override = os.environ.get("JOBBRIDGE_PROJECT_ROOT")
    if override:
        return Path(override).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / TEMPLATE_FILE).is_file():
            return candidate
    return Path(__file__).resolve().parents[2]


def template_path(root: Path | None = None) -> Path:
    return (root or project_root()) / TEMPLATE_FILE


def state_dir(root: Path | None = None) -> Path:
    """``.jobbridge/local/`` under the project root (gitignored), or ``JOBBRIDGE_STATE_DIR``
    (so that tests can run a stack of their own beside a developer's); created on demand."""
    override = os.environ.get("JOBBRIDGE_STATE_DIR")
    path = Path(override) if override else (root or project_root()) / STATE_SUBDIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def stack_file(root: Path | None = None) -> Path:
    return state_dir(root) / STACK_FILE


def read_stack_file(root: Path | None = None) -> dict | None:
    """The running stack's ``stack.json`` (endpoint, API URL, resources), or None."""
    path = state_dir(root) / STACK_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
