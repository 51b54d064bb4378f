"""Conversations as token ids, with per-token loss weights that mark what the assistant said.

With a tokenizer that has the role tokens (BPE: <|system|> <|user|> <|assistant|> <|end|>, special
tokens inserted by id only) a turn is `<|role|> text <|end|>`. Without them (char) it is one line,
`Role: text\\n`; newlines inside a turn become spaces there, since a newline ends the turn.
Weights are 1.0 on the assistant's text and on the end of its turn (so the model learns to stop),
0.0 on headers and on every other role's turns. Chatting and fine-tuning render through the same
function, so the model is trained on exactly what it is shown; it lives in the data stage because
the fine-tuning data is rendered with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError

ROLES = ("system", "user", "assistant")
PLAIN_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclasses.dataclass(frozen=True)
class Turn:
    role: str  # system | user | assistant
    text: str


class ChatTemplate:
    """Renders turns for one tokenizer; knows how a reply ends (stop tokens or strings)."""

    def __init__(self, tokenizer: Tokenizer, role_tokens: bool | None = None):
        """role_tokens None: the role-token template whenever the tokenizer has them; False: the
        plain template (a model never trained on the role tokens); True: they must be there."""
        self.tokenizer = tokenizer
        ids = tokenizer.special_ids
        has = all(f"<|{r}|>" in ids for r in ROLES) and "<|end|>" in ids
        if role_tokens and not has:
            raise UserError("the model was trained with chat role tokens its tokenizer lacks; "
                            "the workdir's tokenizer does not belong to its chat.json")
        self.role_tokens = has if role_tokens is None else role_tokens
        if self.role_tokens:
            self.stop_tokens = tuple(ids[t] for t in ("<|end|>", "<|endoftext|>") if t in ids)
            self.stop_strings: tuple[str, ...] = ()
        else:
            self.stop_tokens, self.stop_strings = (), ("\n",)
            if tokenizer.kind == "char":
                needed = set("".join(f"{n}: \n" for n in PLAIN_NAMES.values()))
                missing = sorted(needed - set(getattr(tokenizer, "chars", "")))
                if missing:
                    raise UserError(f"the plain chat template needs the characters {''.join(missing)!r}, "
                                    "which the model's char vocabulary lacks; chat with a model trained on "
                                    "text that has them")

    def render(self, turns: Sequence[Turn], open_reply: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32, weights float32): weights are 1.0 on the assistant's words and on the end
        of its turns, 0.0 elsewhere.

        open_reply appends the start of an assistant turn, for the model to continue.
        """
        pieces = [self.render_turn(turn) for turn in turns]
        if open_reply:
            head = self.header("assistant")
            pieces.append((head, np.zeros(len(head), np.float32)))
        ids = np.concatenate([p for p, _ in pieces] or [np.zeros(0, np.int32)]).astype(np.int32)
        weights = np.concatenate([w for _, w in pieces] or [np.zeros(0, np.float32)])
        return ids, weights

    def render_turn(self, turn: Turn) -> tuple[np.ndarray, np.ndarray]:
        """One turn's ids and weights; a conversation's rendering is the concatenation of its turns'."""
        if turn.role not in ROLES:
            raise UserError(f"chat role {turn.role!r} is unknown; use one of {', '.join(ROLES)}")
        head, body = self.turn_parts(turn)
        learn = float(turn.role == "assistant")
        weights = np.concatenate([np.zeros(len(head), np.float32), np.full(len(body), learn, np.float32)])
        return np.concatenate([head, body]).astype(np.int32), weights

    def parse(self, ids: Sequence[int]) -> list[Turn]:
        """The turns a rendering holds (the inverse of `render`); an unfinished last turn keeps
        the text it has so far."""
        if not self.role_tokens:
            turns = []
            names = {f"{name}:": role for role, name in PLAIN_NAMES.items()}
            for line in self.tokenizer.decode(ids).split("\n"):
                head, _, text = line.partition(" ")
                if head in names:
                    turns.append(Turn(names[head], text))
            return turns
        roles = {self.tokenizer.special_ids[f"<|{r}|>"]: r for r in ROLES}
        end = self.tokenizer.special_ids["<|end|>"]
        turns, role, body = [], None, []
        for i in map(int, ids):
            if role is None:
                role, body = roles.get(i), []
            elif i == end:
                turns.append(Turn(role, self.tokenizer.decode(body)))
                role = None
            else:
                body.append(i)
        if role is not None:
            turns.append(Turn(role, self.tokenizer.decode(body)))
        return turns

    def header(self, role: str) -> np.ndarray:
        if self.role_tokens:
            return np.array([self.tokenizer.special_ids[f"<|{role}|>"]], np.int32)
        return self.encode(f"{PLAIN_NAMES[role]}:")

    def turn_parts(self, turn: Turn) -> tuple[np.ndarray, np.ndarray]:
        """(header, text with the end of turn)."""
        if self.role_tokens:
            end = np.array([self.tokenizer.special_ids["<|end|>"]], np.int32)
            return self.header(turn.role), np.concatenate([self.encode(turn.text), end])
        return self.header(turn.role), self.encode(" " + " ".join(turn.text.splitlines()) + "\n")

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), np.int32)

    def fit(self, turns: Sequence[Turn], max_tokens: int) -> list[Turn]:
        """The turns without the oldest ones (a system turn stays) until their prompt fits
        max_tokens; the newest turn always stays, however long."""
        system = [t for t in turns[:1] if t.role == "system"]
        rest = list(turns[len(system):])
        while len(rest) > 1 and len(self.render(system + rest, open_reply=True)[0]) > max_tokens:
            rest.pop(0)
        return system + rest


def render_conversation(turns: Sequence[Turn], tokenizer: Tokenizer,
                        open_reply: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a conversation and its loss weights (1.0 on assistant tokens), for fine-tuning."""
    return ChatTemplate(tokenizer).render(turns, open_reply)


CHAT_RECORD = "chat.json"


def write_chat_record(workdir: str, corpus) -> None:
    """Record in the workdir of a model trained on conversations which template it was trained
    with (the role-token one with its ids, or the plain one), so chatting renders exactly what
    training saw. A model trained on text gets no record."""
    if not hasattr(corpus, "packed"):
        return
    template = ChatTemplate(corpus.tokenizer)
    record: dict = {"template": "role_tokens" if template.role_tokens else "plain"}
    if template.role_tokens:
        record["role_tokens"] = {t: corpus.tokenizer.special_ids[t] for t in [f"<|{r}|>" for r in ROLES] + ["<|end|>"]}
    with open(os.path.join(workdir, CHAT_RECORD), "w") as f:
        json.dump(record, f, indent=1)


def trained_template(workdir: str, tokenizer: Tokenizer) -> ChatTemplate:
    """The template a workdir's model was trained with (chat.json); without a record (a model
    trained on text) the template its tokenizer allows, as before records existed."""
    path = os.path.join(workdir, CHAT_RECORD)
    if not os.path.exists(path):
        return ChatTemplate(tokenizer)
    with open(path) as f:
        kind = json.load(f).get("template")
    return ChatTemplate(tokenizer, role_tokens=kind == "role_tokens")
