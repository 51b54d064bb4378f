"""Corpus cleaning: each step is a config switch and reports what it removed."""

from __future__ import annotations

import re
import unicodedata

from gptjax.data.sources import Document

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
# In markdown, two or more spaces after text end a line with a hard break: content, not noise.
MARKDOWN_TRAILING_SPACE = re.compile(r"(?:(?<=\S)( {2,})|[ \t]+)$", re.MULTILINE)
BLANK_RUNS = re.compile(r"\n{3,}")


def clean(docs: list[Document], cfg) -> tuple[list[Document], dict]:
    """Apply the switched-on steps of `data.clean` in order; return documents and counts."""
    stats: dict = {"documents_in": len(docs), "chars_in": sum(len(d.text) for d in docs)}

    def step(name: str, fn) -> None:
        """fn(text, is_markdown) -> cleaned text, for every document."""
        nonlocal docs
        before = sum(len(d.text) for d in docs)
        docs = [Document(d.name, fn(d.text, d.name.endswith(".md"))) for d in docs]
        stats[f"{name}_chars_removed"] = before - sum(len(d.text) for d in docs)

    if cfg.nfc:
        step("nfc", lambda t, _: unicodedata.normalize("NFC", t))
    if cfg.control_chars:
        step("control_chars", lambda t, _: CONTROL.sub("", t.replace("\r\n", "\n").replace("\r", "\n")))
    if cfg.whitespace:
        step("whitespace", normalise_whitespace)
    if cfg.dedup_lines:
        seen: set[str] = set()

        def first_occurrences(text: str, _markdown: bool) -> str:
            kept = []
            for line in text.split("\n"):
                if not line.strip() or line not in seen:
                    seen.add(line)
                    kept.append(line)
            return "\n".join(kept)

        step("dedup_lines", first_occurrences)
    if cfg.dedup_documents:
        seen_docs: set[str] = set()
        kept = [d for d in docs if not (d.text in seen_docs or seen_docs.add(d.text))]
        stats["dedup_documents_removed"] = len(docs) - len(kept)
        docs = kept
    short = [d for d in docs if len(d.text.strip()) < cfg.min_chars]
    stats["min_chars_documents_removed"] = len(short)
    docs = [d for d in docs if len(d.text.strip()) >= cfg.min_chars]
    stats["documents_out"] = len(docs)
    stats["chars_out"] = sum(len(d.text) for d in docs)
    return docs, stats


def normalise_whitespace(text: str, markdown: bool) -> str:
    """No trailing spaces (but markdown's hard breaks, as two spaces), at most one blank line in a
    row, one final newline."""
    if markdown:
        text = MARKDOWN_TRAILING_SPACE.sub(lambda m: "  " if m.group(1) else "", text)
    else:
        text = TRAILING_SPACE.sub("", text)
    return BLANK_RUNS.sub("\n\n", text).strip("\n") + "\n"
