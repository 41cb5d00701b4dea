"""The documentation cannot drift: every setting is documented, every link leads somewhere, the
README stays a front door."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import AliasChoices

from backend.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "configuration.md"
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 160

#: Variables docs/configuration.md may name that are not promptreel settings: read by the SDKs,
#: servers and toolkits promptreel runs on (boto3, uvicorn, NiceGUI, pywebview, Qt).
OTHER_VARIABLES = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "FORWARDED_ALLOW_IPS",
    "NICEGUI_STORAGE_PATH",
    "PYWEBVIEW_GUI",
    "QTWEBENGINE_CHROMIUM_FLAGS",
}

FENCED_CODE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
VARIABLE = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")


def setting_names() -> set[str]:
    """Every environment name Settings reads: its validation alias(es), else the field name."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(name)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        else:
            names.add(str(alias))
    return names


def table_variables(text: str) -> set[str]:
    """The variables named in the first column of the document's tables."""
    names = set()
    for line in FENCED_CODE.sub("", text).splitlines():
        cells = line.strip().strip("|").split("|")
        if line.lstrip().startswith("|") and len(cells) > 1:
            names.update(VARIABLE.findall(cells[0]))
    return names


def anchors(path: Path) -> Iterator[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered)."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCED_CODE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


def links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCED_CODE.sub("", path.read_text(encoding="utf-8")))
    return LINK.findall(text)


def test_every_setting_is_in_the_configuration_document():
    text = CONFIGURATION.read_text(encoding="utf-8")
    documented = table_variables(text)
    missing = sorted(setting_names() - documented)
    assert not missing, f"settings missing from the tables of docs/configuration.md: {missing}"


def test_every_variable_in_the_configuration_document_is_real():
    documented = table_variables(CONFIGURATION.read_text(encoding="utf-8"))
    unknown = sorted(documented - setting_names() - OTHER_VARIABLES)
    assert not unknown, f"docs/configuration.md names variables that nothing reads: {unknown}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_in_the_repository(document: Path):
    broken = []
    for target in links(document):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not a file of ours
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (document.parent / file_part).resolve() if file_part else document
        if file_part.startswith("/") or not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in set(anchors(resolved)):
            broken.append(f"{target}: no such heading in {resolved.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the details belong in docs/"
