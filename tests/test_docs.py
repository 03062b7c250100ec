"""Every design reference in the code and configs points to a section that exists under docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"docs/([\w./-]+\.md)#([\w-]+)")
ANCHOR = re.compile(r'<a id="([\w-]+)"></a>')
# the citation styles of the specification documents that are not part of the repository
STALE = re.compile(r"\bspec \d\d\b|\bquirk Q\d|\bspec decision\b|§\s*\d", re.IGNORECASE)
SCANNED = ("refign", "conf", "scripts", "tests")


def sources() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in SCANNED:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yaml", ".md")]
    return sorted(files)


def anchors(doc: Path) -> set[str]:
    """The explicit anchors of a page, each inside a heading or a list entry that names the section."""
    return set(ANCHOR.findall(doc.read_text()))


def test_every_reference_resolves_to_an_anchor_in_docs():
    refs = [
        (path.relative_to(ROOT), page, anchor)
        for path in sources()
        for page, anchor in REFERENCE.findall(path.read_text())
    ]
    # not vacuous: the pattern finds the citations of the code, the configs, the scripts and the tests alike
    assert {src.parts[0] for src, _, _ in refs} >= set(SCANNED)
    broken = [
        f"{src}: docs/{page}#{anchor}"
        for src, page, anchor in refs
        if not (ROOT / "docs" / page).is_file() or anchor not in anchors(ROOT / "docs" / page)
    ]
    assert broken == []


def test_no_reference_to_documents_outside_the_repository():
    stale = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sources()
        if path.name != "test_docs.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if STALE.search(line)
    ]
    assert stale == []


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_links_between_docs_pages_resolve(doc):
    links = re.findall(r"\]\(([\w.-]+\.md)?#([\w-]+)\)", doc.read_text())
    broken = [
        f"{page or doc.name}#{anchor}"
        for page, anchor in links
        if anchor not in anchors(ROOT / "docs" / (page or doc.name))
    ]
    assert broken == []


def test_anchors_are_unique_per_page():
    for doc in (ROOT / "docs").glob("*.md"):
        found = ANCHOR.findall(doc.read_text())
        assert len(found) == len(set(found)), doc.name


# The sections of the README before it was cut to a five-minute read (issue 20), each with the heading that now
# holds its text: a heading carrying that anchor, in that page, whose words contain the old heading.
FORMER_README_SECTIONS = {
    "Install": "docs/development.md#install",
    "How configurations compose": "docs/configuration.md#how-configurations-compose",
    "Methods": "docs/self-training.md#methods",
    "Refign": "docs/refign.md#running",
    "MIC (Masked Image Consistency)": "docs/mic.md#mic",
    "Alignment network (UAWarpC)": "docs/uawarpc.md#commands",
    "Real data": "docs/data.md#real-data",
    "Downloads": "docs/data.md#downloads",
    "Expected layout": "docs/data.md#expected-layout",
    "Preparation": "docs/data.md#preparation",
    "Pretrained weights": "docs/data.md#pretrained-weights",
    "Train, evaluate, export (ACDC and Dark Zurich)": "docs/data.md#train-evaluate-export",
    "Multi-GPU": "docs/gpu.md#multi-gpu",
    "Paper scale on a GPU": "docs/gpu.md#paper-scale-on-a-gpu",
    "Reproducibility": "docs/reproducibility.md#reproducibility",
    "The embedded synthetic benchmark": "docs/synthetic.md#benchmark",
    "Shipped weights: the pretrained start and the CPU-scale matcher": "docs/synthetic.md#shipped-weights",
    "Results on the synthetic benchmark": "README.md#results",
    "Ablation": "docs/results.md#ablation",
    "Development": "docs/development.md#development",
}
HEADING = re.compile(r"^#+\s+(.*)$", re.M)


@pytest.mark.parametrize("section", FORMER_README_SECTIONS)
def test_former_readme_section_is_a_heading(section):
    page, anchor = FORMER_README_SECTIONS[section].split("#")
    headings = [h for h in HEADING.findall((ROOT / page).read_text()) if f'<a id="{anchor}"></a>' in h]
    assert len(headings) == 1, f"{page} has no heading with the anchor {anchor}"
    assert section.lower() in ANCHOR.sub("", headings[0]).lower()


def test_every_docs_page_is_linked_from_the_index():
    index = (ROOT / "docs" / "README.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md")
    assert [name for name in pages if f"]({name})" not in index] == []
