"""Conversations as token ids, with a loss mask that marks what the assistant said.

With a tokenizer that has the role tokens (BPE: <|system|> <|user|> <|assistant|> <|end|>) a
turn is `<|role|> text <|end|>`. Without them (char) it is one line, `Role: text\\n`; newlines
inside a turn become spaces there, since a newline ends the turn. Chatting and fine-tuning
render through the same function, so the model is trained on exactly what it is shown.
"""

from __future__ import annotations

import dataclasses
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

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        ids = tokenizer.special_ids
        self.role_tokens = all(f"<|{r}|>" in ids for r in ROLES) and "<|end|>" in ids
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
        """(ids, loss mask): the mask is 1 on the assistant's words and on the end of its turns.

        open_reply appends the start of an assistant turn, for the model to continue.
        """
        pieces: list[tuple[np.ndarray, int]] = []
        for turn in turns:
            if turn.role not in ROLES:
                raise UserError(f"chat role {turn.role!r} is unknown; use one of {', '.join(ROLES)}")
            learn = int(turn.role == "assistant")
            head, body = self.turn_parts(turn)
            pieces += [(head, 0), (body, learn)]
        if open_reply:
            pieces.append((self.header("assistant"), 0))
        ids = np.concatenate([p for p, _ in pieces] or [np.zeros(0, np.int32)]).astype(np.int32)
        mask = np.concatenate([np.full(len(p), m, np.int32) for p, m in pieces] or [np.zeros(0, np.int32)])
        return ids, mask

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
    """Token ids of a conversation and its loss mask (1 on assistant tokens), for fine-tuning."""
    return ChatTemplate(tokenizer).render(turns, open_reply)
