"""The README and docs/ stay true to the repository: the stage table names exactly the params each stage
lists in dvc.yaml, the real experiment is one command wherever it is shown, the two set-up commands
are make targets, and every relative link points to a file and heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

README = (REPO / "README.md").read_text()
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())


def section(text: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}$", text, re.M)
    assert match, f"no heading {heading!r}"
    body = text[match.end() :]
    end = re.search(rf"^#{{1,{len(match.group(1))}}} ", body, re.M)
    return body[: end.start()] if end else body


def stage_table(text: str) -> dict[str, set[str]]:
    """Stage -> the params its row of the README's stage table names (`download.*` -> `download`)."""
    rows = {}
    for line in section(text, "The pipeline").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = {name.removesuffix(".*") for name in re.findall(r"`([\w.*]+)`", cells[1])}
    return rows


def test_the_stage_table_names_the_params_dvc_yaml_lists():
    table = stage_table(README)
    assert list(table) == list(DVC_YAML["stages"])
    for stage, declared in DVC_YAML["stages"].items():
        assert table[stage] == set(declared.get("params", [])), stage


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S)


def test_the_real_experiment_is_the_same_command_in_the_readme_and_data_sources():
    def command(text: str) -> str:
        found = [block for block in code_blocks(text) if "download.source=inaturalist" in block]
        assert len(found) == 1
        lines = [line for line in found[0].splitlines() if not line.startswith("source ")]
        return " ".join(" ".join(lines).replace("\\", " ").split())

    readme = command(section(README, "Real experiment"))
    assert readme == command((REPO / "docs/data-sources.md").read_text())
    for setting in ("train_head.epochs=20", "finetune.epochs=100", "finetune.schedule=constant"):
        assert f"-S {setting}" in readme


def test_the_two_set_up_commands_are_make_targets():
    block = code_blocks(section(README, "Two commands"))[0]
    assert [line.split("#")[0].strip() for line in block.splitlines()] == ["make repro", "make test"]
    makefile = (REPO / "Makefile").read_text()
    for target in ("repro", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), target


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {slug(heading) for heading in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_relative_links_point_to_files_and_headings_that_exist(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name}: {target}"
        if anchor:
            assert anchor in anchors(path), f"{doc.name}: {target}"
