"""Conversations for supervised fine-tuning: JSONL in the OpenAI `messages` format -> rendered,
truncated and packed windows with loss weights and segment ids -> batches by (seed, step).

File format, one conversation a line (the format OpenAI's fine-tuning API reads):

    {"messages": [{"role": "system", "content": "You are HAMLET, in *Hamlet*."},
                  {"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "group": "tragedies/hamlet.md"}

`group` (optional string) keeps conversations together in one split: the plays' dialogues carry
their play, so held-out conversations come from plays never trained on. Without it each
conversation is its own group. Other keys are ignored.

Bad input: a line that is not JSON, has no `messages` list, has a message without string `role`
and `content`, or a role other than system / user / assistant is reported as `file:line: what`;
with `strict=False` the line is skipped and counted (`ReadStats`), with `strict=True` the first
one is a `UserError`. A conversation without an assistant turn has nothing to learn from: it is
counted and skipped. Turns after the last assistant turn carry no loss and are dropped. Text is
used as written (no data.clean pass; normalise the file beforehand if it needs it).

Truncation (a conversation longer than a window of block_size + 1 tokens): the system turn
stays, the oldest other turns are dropped, whole, until the rest fits, keeping at least the last
exchange (the last assistant turn and the turn before it). If that exchange alone is still too
long, its prompt loses its beginning (the end is what the reply answers), down to a quarter of
the window, and if it is still too long the window keeps its first block_size + 1 tokens, so the
reply loses its end (and its end-of-turn token). A conversation left without any assistant
token (a system turn that leaves it no room) is dropped and counted.
Keeping the persona and the latest exchange is what a chat at inference time sees too
(`ChatTemplate.fit` drops the oldest turns the same way).

Packing: each window (row) of block_size + 1 tokens holds whole conversations, placed in the
seeded order; a conversation that does not fit in what is left of a row starts the next one,
and the rest of the row is padding (id 0, weight 0, segment 0). Segment ids number the
conversations of a row 1, 2, ...: the model masks attention with them (token i may attend to
token j iff j <= i and segments[i] == segments[j]), so no conversation sees another, and
`segment_positions` gives positions that restart at each conversation.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections import Counter
from typing import Iterator, Sequence

import numpy as np

from gptjax.data.chat_template import PLAIN_NAMES, ROLES, ChatTemplate, Turn
from gptjax.data.tokenizers import Tokenizer, build_tokenizer, token_lengths
from gptjax.errors import UserError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]
    group: str   # conversations of one group go to one split
    where: str   # file:line it was read from


@dataclasses.dataclass
class ReadStats:
    """What reading kept and skipped; `problems` names every skipped line as `file:line: what`."""

    lines: int = 0
    conversations: int = 0
    malformed: int = 0
    no_assistant: int = 0
    unknown_roles: Counter = dataclasses.field(default_factory=Counter)
    problems: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.conversations} conversations from {self.lines} lines; skipped {self.malformed} "
                f"malformed, {self.no_assistant} without an assistant turn")
        if self.unknown_roles:
            text += " (unknown roles: " + ", ".join(f"{r} x{n}" for r, n in sorted(self.unknown_roles.items())) + ")"
        return text + (f"; first: {self.problems[0]}" if self.problems else "")


class BadLine(Exception):
    """A line that is not a conversation; the message says why (and names an unknown role)."""

    def __init__(self, what: str, role: str = ""):
        super().__init__(what)
        self.role = role


def conversation_paths(pattern: str) -> list[str]:
    """A .jsonl file, every .jsonl file under a directory, or a glob."""
    if not pattern:
        raise UserError("data.source=conversations needs data.path (a .jsonl file, a directory or a glob)")
    path = os.path.expanduser(pattern)
    if os.path.isfile(path):
        return [path]
    found = ([os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs] if os.path.isdir(path)
             else glob.glob(path, recursive=True))
    paths = sorted(p for p in found if p.endswith(".jsonl") and os.path.isfile(p))
    if not paths:
        raise UserError(f"data.path={pattern!r} matches no .jsonl file of conversations; check the path")
    return paths


def parse_record(line: str) -> tuple[tuple[Turn, ...], str | None]:
    """(turns, group) of one JSONL line, or BadLine saying what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadLine(f"not valid JSON ({e.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise BadLine('no "messages" list')
    group = record.get("group")
    if group is not None and not isinstance(group, str):
        raise BadLine('"group" is not a string')
    turns = []
    for i, m in enumerate(record["messages"]):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadLine(f'message {i} needs string "role" and "content"')
        if m["role"] not in ROLES:
            raise BadLine(f"message {i} has the unknown role {m['role']!r}; use one of {', '.join(ROLES)}",
                          m["role"])
        turns.append(Turn(m["role"], m["content"]))
    return tuple(turns), group


def read_conversations(pattern: str, strict: bool = False) -> tuple[list[Conversation], ReadStats]:
    """The conversations of data.path, in file and line order, and what was skipped."""
    stats = ReadStats()
    out = []
    for path in conversation_paths(pattern):
        for n, line in enumerate(read_lines(path), 1):
            if not line.strip():
                continue
            stats.lines += 1
            where = f"{path}:{n}"
            try:
                turns, group = parse_record(line)
            except BadLine as e:
                if strict:
                    raise UserError(f"{where}: {e}; fix the line or set data.strict=False to skip it") from None
                stats.unknown_roles.update([e.role] if e.role else [])
                stats.malformed += 1
                stats.problems.append(f"{where}: {e}")
                continue
            if not any(t.role == "assistant" for t in turns):
                stats.no_assistant += 1
                stats.problems.append(f"{where}: no assistant turn")
                continue
            out.append(Conversation(turns, group if group is not None else where, where))
    stats.conversations = len(out)
    if not out:
        raise UserError(f"data.path={pattern!r} holds no usable conversation ({stats.summary()})")
    return out, stats


def read_lines(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            yield from f
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); convert it") from None


def write_conversations(path: str, conversations: Sequence[Conversation]) -> None:
    """JSONL in the format `read_conversations` reads (group included)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for c in conversations:
            messages = [{"role": t.role, "content": t.text} for t in c.turns]
            f.write(json.dumps({"messages": messages, "group": c.group}, ensure_ascii=False) + "\n")


def deal_groups(sizes: Sequence[int], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """The split of each group: groups shuffled with the seed are dealt to val, then test, until
    each holds its share of `sizes`; the rest is train. Train, val and (when test_fraction > 0)
    test are never empty."""
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} "
                        "must be in [0, 1) with val > 0 and their sum < 1")
    needed = 2 + (test_fraction > 0)
    if len(sizes) < needed:
        raise UserError(f"splitting conversations needs at least {needed} groups (conversations, or plays), "
                        f"got {len(sizes)}; add conversations")
    total = float(sum(sizes))
    targets = {"val": val_fraction * total, "test": test_fraction * total}
    filled = {"val": 0.0, "test": 0.0}
    order = np.random.default_rng(seed).permutation(len(sizes))
    first = ["val"] + (["test"] if test_fraction > 0 else [])
    names = ["train"] * len(sizes)  # the last group of the order is always train
    for k, i in enumerate(order[:-1]):
        name = first[k] if k < len(first) else next((s for s in ("val", "test") if filled[s] < targets[s]), "train")
        names[i] = name
        if name != "train":
            filled[name] += sizes[i]
    return names


def split_conversations(conversations: Sequence[Conversation], val_fraction: float, test_fraction: float,
                        seed: int) -> dict[str, list[Conversation]]:
    """Held-out conversations: whole groups go to one split, chosen by `deal_groups`."""
    groups: dict[str, int] = {}
    sizes: list[int] = []
    for c in conversations:
        if c.group not in groups:
            groups[c.group] = len(sizes)
            sizes.append(0)
        sizes[groups[c.group]] += sum(len(t.text) for t in c.turns)
    names = deal_groups(sizes, val_fraction, test_fraction, seed)
    out: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
    for c in conversations:
        out[names[groups[c.group]]].append(c)
    return out


def render_truncated(template: ChatTemplate, turns: Sequence[Turn],
                     max_tokens: int) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(ids, weights, truncated) of a conversation cut to max_tokens by the policy in the module
    docstring, or None when nothing of an assistant turn is left."""
    last = max(i for i, t in enumerate(turns) if t.role == "assistant")
    kept = list(turns[:last + 1])
    pieces = [template.render_turn(t) for t in kept]
    n_system = int(kept[0].role == "system")
    total = sum(len(ids) for ids, _ in pieces)
    truncated = total > max_tokens
    while len(pieces) - n_system > 2 and total > max_tokens:
        total -= len(pieces.pop(n_system)[0])
        kept.pop(n_system)
    if total > max_tokens and len(pieces) - n_system == 2 and kept[n_system].role != "assistant":
        # the prompt of the last exchange loses its beginning, down to a quarter of the window
        ids, weights = pieces[n_system]
        head = len(template.header(kept[n_system].role))
        body = len(ids) - head
        keep = max(body - (total - max_tokens), min(body, max_tokens // 4))
        pieces[n_system] = (np.concatenate([ids[:head], ids[len(ids) - keep:]]),
                            np.concatenate([weights[:head], weights[len(ids) - keep:]]))
    ids = np.concatenate([p for p, _ in pieces])[:max_tokens]
    weights = np.concatenate([w for _, w in pieces])[:max_tokens]
    return (ids, weights, truncated) if weights.any() else None


@dataclasses.dataclass
class PackedSplit:
    """Windows of whole conversations. All arrays are (rows, block_size + 1):
    tokens int32 (padding 0), weights float32 (the loss weight of each token as a target:
    1.0 on assistant tokens), segments int32 (1, 2, ... per conversation of the row, 0 = padding)."""

    tokens: np.ndarray
    weights: np.ndarray
    segments: np.ndarray
    conversations: int   # packed (after dropping)
    truncated: int       # cut by the truncation policy (still packed)
    dropped: int         # nothing of an assistant turn fitted

    @property
    def fill(self) -> float:
        """Share of the windows' tokens that are not padding."""
        return float((self.segments > 0).mean()) if self.segments.size else 0.0


def pack(rendered: Sequence[tuple[np.ndarray, np.ndarray]], block_size: int) -> tuple[np.ndarray, ...]:
    """(tokens, weights, segments) of rendered conversations (each at most block_size + 1
    tokens) placed in order, a conversation that does not fit starting the next row."""
    width = block_size + 1
    rows, offsets, row, used = [], [], 0, 0
    for ids, _ in rendered:
        if used + len(ids) > width:
            row, used = row + 1, 0
        rows.append(row)
        offsets.append(used)
        used += len(ids)
    n_rows = row + 1 if rendered else 0
    tokens = np.zeros((n_rows, width), np.int32)
    weights = np.zeros((n_rows, width), np.float32)
    segments = np.zeros((n_rows, width), np.int32)
    segment = 0
    for (ids, w), r, o in zip(rendered, rows, offsets):
        segment = 1 if o == 0 else segment + 1
        tokens[r, o:o + len(ids)] = ids
        weights[r, o:o + len(ids)] = w
        segments[r, o:o + len(ids)] = segment
    return tokens, weights, segments


def pack_split(template: ChatTemplate, conversations: Sequence[Conversation], block_size: int,
               seed: int) -> PackedSplit:
    """Render, truncate and pack one split, in an order shuffled with the seed."""
    if block_size < 1:
        raise UserError(f"packing conversations needs model.block_size >= 1, got {block_size}")
    order = np.random.default_rng(seed).permutation(len(conversations))
    rendered, truncated, dropped = [], 0, 0
    for i in order:
        out = render_truncated(template, conversations[i].turns, block_size + 1)
        if out is None:
            dropped += 1
            continue
        rendered.append(out[:2])
        truncated += out[2]
    return PackedSplit(*pack(rendered, block_size), conversations=len(rendered), truncated=truncated,
                       dropped=dropped)


def segment_positions(segments: np.ndarray) -> np.ndarray:
    """Position of each token within its conversation (0 at each conversation's first token),
    for positional encodings that restart per conversation. Shape as `segments`, int32."""
    s = np.asarray(segments)
    t = np.arange(s.shape[-1])
    starts = np.concatenate([np.ones(s.shape[:-1] + (1,), bool), s[..., 1:] != s[..., :-1]], axis=-1)
    first = np.maximum.accumulate(np.where(starts, t, 0), axis=-1)
    return (t - first).astype(np.int32)


def rows_to_batch(packed: PackedSplit, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(inputs, targets, weights, segments), each (len(rows), block_size): weights are the
    targets' loss weights, zero where a target would belong to another conversation than its
    input; segments are the inputs' (for the attention mask)."""
    t, w, s = packed.tokens[rows], packed.weights[rows], packed.segments[rows]
    same = s[:, 1:] == s[:, :-1]
    return t[:, :-1], t[:, 1:], w[:, 1:] * same, s[:, :-1]


def epoch_rows(seed: int, step: int, batch_size: int, n_rows: int) -> np.ndarray:
    """Rows of one step: steps walk through a fresh seeded permutation of the rows each epoch,
    so every row is seen once per epoch and the batch depends only on (seed, step)."""
    if n_rows < 1:
        raise UserError("the conversation split packs into no window; add conversations")
    flat = step * batch_size + np.arange(batch_size)
    epochs, pos = np.divmod(flat, n_rows)
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n_rows)
        out[epochs == e] = perm[pos[epochs == e]]
    return out


def conversation_batch(packed: PackedSplit, seed: int, step: int, batch_size: int) -> tuple[np.ndarray, ...]:
    """The training batch of one step: (inputs int32, targets int32, weights float32,
    segments int32), each (batch_size, block_size); a pure function of (seed, step)."""
    return rows_to_batch(packed, epoch_rows(seed, step, batch_size, len(packed.tokens)))


def sequential_conversation_batches(packed: PackedSplit, batch_size: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Every row once, in order, for validation; the last batch is filled with rows of zero weight."""
    n = len(packed.tokens)
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size)
        inputs, targets, weights, segments = rows_to_batch(packed, np.minimum(rows, n - 1))
        yield inputs, targets, weights * (rows < n)[:, None], segments


@dataclasses.dataclass
class ConversationCorpus:
    """What training on conversations reads: packed windows per split and their tokenizer."""

    tokenizer: Tokenizer
    packed: dict[str, PackedSplit]   # split -> windows
    stats: ReadStats
    token_bytes: np.ndarray          # id -> UTF-8 bytes it stands for
    token_chars: np.ndarray          # id -> characters it completes


def tokenizer_text(conversations: Sequence[Conversation]) -> str:
    """Text a new tokenizer is trained on: the turns, and the plain template's role names."""
    names = "".join(f"{n}: \n" for n in PLAIN_NAMES.values())
    return names + "\n".join(t.text for c in conversations for t in c.turns)


def prepare_conversations(data_config, seed: int, block_size: int,
                          tokenizer: Tokenizer | None = None) -> ConversationCorpus:
    """Read data.path, split by group, render with `tokenizer` (a base model's; else one built
    from the training conversations as data.tokenizer says) and pack each split."""
    conversations, stats = read_conversations(data_config.path, data_config.strict)
    splits = split_conversations(conversations, data_config.val_fraction, data_config.test_fraction, seed)
    return pack_corpus(data_config, splits, stats, seed, block_size, tokenizer)


def pack_corpus(data_config, splits: dict[str, list[Conversation]], stats: ReadStats, seed: int, block_size: int,
                tokenizer: Tokenizer | None = None) -> ConversationCorpus:
    """The corpus of conversations already split: tokenizer (given, or built from train) and packed windows."""
    tok = tokenizer if tokenizer is not None else build_tokenizer(data_config, tokenizer_text(splits["train"]))
    template = ChatTemplate(tok)
    packed = {name: pack_split(template, convs, block_size, seed + k) for k, (name, convs) in enumerate(splits.items())}
    for name in ("train", "val"):
        if not packed[name].conversations:
            raise UserError(f"no {name} conversation keeps an assistant token within model.block_size={block_size} "
                            f"(all {packed[name].dropped} dropped); raise model.block_size or shorten the prompts")
    return ConversationCorpus(tok, packed, stats, *token_lengths(tok))
