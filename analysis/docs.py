"""The documented results, written from the committed evidence files between markers:

    <!-- results:NAME:begin -->
    ...written by `python -m analysis docs`...
    <!-- results:NAME:end -->

Each block is a document, a name and a function of the repository root that returns its text.
`write_docs` rewrites every block; `check_docs` names the blocks whose committed text differs
from what would be written. Text outside the markers is left as it is."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from analysis import docs_cards, docs_index, docs_results

README = "README.md"
CARD = "extract/weights/MODEL_CARD.md"
BIGAN = "extract/weights/bigan-fmnist.md"
INDEX_DOC = "evidence/README.md"
WIDTH = 100  # prose lines, as the documents are written


def _matrix(root: Path) -> str:
    return (root / "evidence/matrix/leaderboard.md").read_text().strip()


@dataclass(frozen=True)
class Block:
    doc: str  # the document, relative to the repository root
    name: str
    render: Callable[[Path], str]  # the block's text from the evidence files under the root
    wrapped: bool = True  # False: the text as the evidence file has it

    @property
    def label(self) -> str:
        return f"{self.doc}:{self.name}"


BLOCKS = (
    Block(README, "demo-run", docs_results.demo_run),
    Block(README, "demo-table", docs_results.seed_table),
    Block(README, "bests", docs_results.bests),
    Block(README, "single-runs", docs_results.single_runs),
    Block(README, "other-rows", docs_results.other_rows),
    Block(README, "sweep", docs_results.sweep),
    Block(README, "workflow", docs_results.workflow),
    Block(README, "demo-matrix", _matrix, wrapped=False),
    Block(CARD, "single-runs", docs_results.single_runs),
    Block(CARD, "bars", docs_cards.bars),
    Block(CARD, "generation", docs_cards.generation),
    Block(CARD, "demo-table", docs_results.seed_table),
    Block(BIGAN, "curve", docs_cards.bigan_curve),
    Block(BIGAN, "single-runs", docs_results.single_runs),
    Block(BIGAN, "summary", docs_cards.bigan_summary),
    Block(INDEX_DOC, "evidence-index", docs_index.evidence_index),
)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"


def relink(text: str, doc: str) -> str:
    """Links written from the root (`](evidence/...`) made relative to the document's folder."""
    up = os.path.relpath(".", Path(doc).parent)
    if up == ".":
        return text
    return text.replace("](evidence/", f"]({up}/evidence/").replace(
        "](extract/weights/", f"]({up}/extract/weights/"
    )


def wrap(text: str, width: int = WIDTH) -> str:
    """Prose paragraphs and bullets wrapped at `width`; tables and code fences kept as they are."""
    out, fenced = [], False
    for para in text.split("\n\n"):
        fenced ^= para.count("```") % 2 == 1
        if para.startswith(("|", "```")) or fenced or "```" in para:
            out.append(para)
            continue
        items = [para] if not para.startswith("- ") else ["- " + p for p in para[2:].split("\n- ")]
        out.append(
            "\n".join(
                textwrap.fill(
                    " ".join(item.split()),
                    width,
                    subsequent_indent="  " if item.startswith("- ") else "",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                for item in items
            )
        )
    return "\n\n".join(out)


def rendered(block: Block, root: Path) -> str:
    text = relink(block.render(root).strip(), block.doc)
    return wrap(text) if block.wrapped else text


def shown(text: str, block: Block) -> str:
    """The text between a block's markers in a document (ValueError if they are not there once)."""
    begin, end = markers(block.name)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"{block.label}: expected one {begin} and one {end}")
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def replace(text: str, block: Block, body: str) -> str:
    begin, end = markers(block.name)
    shown(text, block)  # checks the markers
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    return f"{head}{begin}\n{body}\n{end}{tail}"


def check_docs(root: Path, blocks=BLOCKS) -> list[str]:
    """The blocks (`doc:name`) whose committed text differs from what `write_docs` writes."""
    return [b.label for b in blocks if shown((root / b.doc).read_text(), b) != rendered(b, root)]


def write_docs(root: Path, blocks=BLOCKS) -> list[str]:
    """Rewrite every block from the evidence; returns the blocks that changed. Every block is
    rendered before any document is written, so an error leaves every document as it was."""
    texts, changed = {}, []
    for block in blocks:
        text = texts.get(block.doc) or (root / block.doc).read_text()
        texts[block.doc] = replace(text, block, rendered(block, root))
        if shown(text, block) != shown(texts[block.doc], block):
            changed.append(block.label)
    for doc, text in texts.items():
        if (root / doc).read_text() != text:
            (root / doc).write_text(text)
    return changed
