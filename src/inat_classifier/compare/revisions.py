"""Files of a run as a git revision, a ``dvc exp`` experiment or the workspace holds them.

``compare`` and ``check`` read only outputs that DVC leaves to git (``cache: false``), so a revision's
files come from ``git show COMMIT:PATH``, with nothing checked out. A name resolves in DVC's order: a
git revision first, then an experiment, whose commit DVC keeps at the ref
``refs/exps/<baseline[:2]>/<baseline[2:]>/<name>``; ``workspace`` is the files on disk.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

WORKSPACE = "workspace"
EXPERIMENT_REF = re.compile(r"refs/exps/(?P<head>[0-9a-f]{2})/(?P<tail>[0-9a-f]{38})/(?P<name>[^/]+)")


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run git in ``root`` with an argument list (no shell), returning whatever it answers."""
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)


def repository_root(start: Path | None = None) -> Path:
    """The top of the git checkout around ``start`` (the current directory by default)."""
    start = Path.cwd() if start is None else start
    found = git(start, "rev-parse", "--show-toplevel")
    if found.returncode:
        raise UserError(f"{start}: not inside a git repository")
    return Path(found.stdout.decode().strip())


@dataclass(frozen=True)
class Revision:
    """A run to read files from: ``commit`` is None for the workspace."""

    name: str
    commit: str | None
    root: Path

    @property
    def label(self) -> str:
        return self.name if self.commit is None else f"{self.name} ({self.commit[:7]})"

    def read_text(self, path: str) -> str | None:
        """The text of ``path`` (relative to the repository root) in this run; None when it has no such file."""
        if self.commit is None:
            file = self.root / path
            return file.read_text(encoding="utf-8") if file.is_file() else None
        shown = git(self.root, "show", f"{self.commit}:{path}")
        return None if shown.returncode else shown.stdout.decode("utf-8")


def _commit(root: Path, name: str) -> str | None:
    found = git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}")
    return found.stdout.decode().strip() if found.returncode == 0 else None


def experiment_commit(root: Path, name: str) -> str | None:
    """The commit of the ``dvc exp`` experiment ``name``; None when there is none.

    As DVC does: when experiments of several baselines share the name, the one based on HEAD wins,
    and without one based on HEAD the name is ambiguous.
    """
    refs = git(root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/").stdout.decode().split("\n")
    found = {}  # baseline commit -> experiment commit
    for line in filter(None, refs):
        ref, commit = line.split(" ")
        match = EXPERIMENT_REF.fullmatch(ref)
        if match and match["name"] == name:
            found[match["head"] + match["tail"]] = commit
    if len(found) > 1:
        head = _commit(root, "HEAD")
        if head not in found:
            baselines = ", ".join(sorted(sha[:7] for sha in found))
            raise UserError(f"experiment name '{name}' is ambiguous: experiments of baselines {baselines} share it")
        return found[head]
    return next(iter(found.values()), None)


def resolve(name: str, root: Path) -> Revision:
    """``workspace``, a git revision or an experiment name, checked to exist."""
    if name == WORKSPACE:
        return Revision(name, None, root)
    commit = _commit(root, name) or experiment_commit(root, name)
    if commit is None:
        raise UserError(f"'{name}' is neither a git revision, a dvc experiment nor '{WORKSPACE}'")
    return Revision(name, commit, root)
