"""``make report``: one Markdown file for a pull request or a CML comment.

What a reviewer needs to judge a change of params or code, against a base revision (``main``): which
params moved (``dvc params diff``), how far each metric moved (``dvc metrics diff``), whether the
accuracy change is more than chance (``inat-classifier compare``), and the plots of both runs. The
DVC tables come from DVC itself, so they read exactly as on the command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from ..atomic import write_text
from .comparison import compare_runs, render_text
from ..errors import UserError
from .revisions import WORKSPACE, resolve

DEFAULT_OUTPUT = Path("review/review.md")


def dvc(root: Path, *args: str) -> str:
    """The stdout of ``dvc ARGS`` in ``root``; its last error line as a UserError when it fails."""
    try:
        result = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError("dvc is not on PATH (source .venv/bin/activate, or use make report)") from None
    if result.returncode:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or ["no message"]
        raise UserError(f"dvc {' '.join(args)} failed: {lines[-1].removeprefix('ERROR: ')}")
    return result.stdout


def plots(root: Path, base: str, folder: Path) -> tuple[list[tuple[str, str, Path]], list[str]]:
    """``dvc plots diff`` of base and workspace into ``folder``: the interactive page (``index.html``),
    (plot, revision, file) of each image plot, and the titles of the other (Vega) plots."""
    if folder.exists():
        shutil.rmtree(folder)
    dvc(root, "plots", "diff", base, "-o", str(folder))  # index.html, for a CI artifact or a browser
    shown = json.loads(dvc(root, "plots", "diff", base, "--json", "-o", str(folder / "images")))
    images, vega = [], []
    for name, renders in shown.get("data", {}).items():
        for render in renders:
            if render.get("type") == "image":
                images.append((name, render["revisions"][0], Path(render["url"])))
            elif name not in vega:
                vega.append(name)
    return images, vega


def verdict(root: Path, base: str) -> str:
    """``inat-classifier compare BASE workspace`` as text; why not, when the runs cannot be compared."""
    try:
        a, b = resolve(base, root), resolve(WORKSPACE, root)
        return render_text(a, b, *compare_runs(a, b))
    except UserError as exc:
        return f"not compared: {exc}\n"


def render_review(base: str, params_md: str, metrics_md: str, compared: str, images, vega, page: str) -> str:
    """The Markdown; ``images`` are (plot, revision, path relative to the review), ``page`` the HTML."""
    lines = [
        f"# Review: workspace against `{base}`",
        "",
        "_Written by `make report` (`inat-classifier review`); each section is the named command's output._",
        "",
        f"## Params changed (`dvc params diff {base}`)",
        "",
        params_md.strip() or "No params changed.",
        "",
        f"## Metrics (`dvc metrics diff {base}`)",
        "",
        metrics_md.strip() or "No metric changed.",
        "",
        f"## Is the change more than chance? (`inat-classifier compare {base} workspace`)",
        "",
        "```",
        compared.rstrip(),
        "```",
        "",
        f"## Plots (`dvc plots diff {base}`)",
        "",
    ]
    for plot, revision, path in images:
        lines += [f"{plot}, {revision}:", "", f"![{plot} ({revision})]({path.as_posix()})", ""]
    if vega:
        lines.append(f"Interactive, both revisions on one chart (`{page}`): " + ", ".join(vega) + ".")
    return "\n".join(lines).rstrip() + "\n"


def write_review(root: Path, base: str = "main", output: Path = DEFAULT_OUTPUT) -> Path:
    """Write the review to ``output`` (relative to ``root``), its plots in a folder beside it."""
    output = root / output
    folder = output.parent / "plots"
    params_md = dvc(root, "params", "diff", base, "--md")  # first: a bad revision stops here, in one line
    metrics_md = dvc(root, "metrics", "diff", base, "--md")
    images, vega = plots(root, base, folder)
    images = sorted(images, key=lambda image: (image[0], image[1] != base))  # per plot: the base, then the change
    relative = [(plot, revision, path.relative_to(output.parent)) for plot, revision, path in images]
    page = (folder / "index.html").relative_to(root).as_posix()
    write_text(output, render_review(base, params_md, metrics_md, verdict(root, base), relative, vega, page))
    return output
