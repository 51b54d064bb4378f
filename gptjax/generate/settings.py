"""How to generate: one settings object for every strategy, checked once before any compile.

Bad values end as a `UserError` naming the setting, so the CLI, the chat and library
callers all refuse the same things with the same words.
"""

from __future__ import annotations

import dataclasses

from gptjax.errors import UserError

STRATEGIES = ("greedy", "sample", "beam")
# The most new tokens one request may ask for: the decode buffers hold every generated token,
# so an unbounded request would grow memory without end even while the KV cache slides.
MAX_NEW_TOKENS = 16_384
OVERFLOW_POLICIES = ("sliding", "error")


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Decoding strategy and its knobs.

    `overflow` decides what happens when prompt plus new tokens outgrow the model's context:
    `error` refuses up front; `sliding` drops the oldest tokens, re-filling the cache with the
    last `sliding_keep` tokens whenever it is full (0 means half the context;
    the whole context reproduces full recomputation exactly, at its cost).
    Beam search scores raw log-probabilities: temperature, top-k/p, min-p and penalties are
    for sampling and greedy decoding only.
    """

    strategy: str = "sample"
    max_new_tokens: int = 200
    num_samples: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    beams: int = 4
    length_penalty: float = 1.0
    early_stopping: bool = True
    stop_tokens: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    seed: int = 0
    overflow: str = "sliding"
    sliding_keep: int = 0

    @property
    def greedy(self) -> bool:
        return self.strategy == "greedy" or (self.strategy == "sample" and self.temperature == 0.0)

    def validate(self) -> None:
        """Refuse bad values that need no model to see (a UserError naming the first one)."""
        if self.strategy not in STRATEGIES:
            raise UserError(f"strategy {self.strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")
        if self.overflow not in OVERFLOW_POLICIES:
            raise UserError(f"overflow {self.overflow!r} is unknown; use one of {', '.join(OVERFLOW_POLICIES)}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens={self.max_new_tokens}; ask for at least 1 new token")
        if self.max_new_tokens > MAX_NEW_TOKENS:
            raise UserError(f"max_new_tokens={self.max_new_tokens} is over the limit of {MAX_NEW_TOKENS:,}; "
                            "ask for fewer, or continue from the output in a second run")
        if self.num_samples < 1:
            raise UserError(f"num_samples={self.num_samples}; ask for at least 1 sample")
        if not self.temperature >= 0.0:
            raise UserError(f"temperature={self.temperature} is negative; use 0 (greedy) or more")
        if self.top_k < 0:
            raise UserError(f"top_k={self.top_k} is negative; use 0 (off) or a positive count")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p={self.top_p} is outside (0, 1]; use e.g. 0.9, or 1 to turn it off")
        if not 0.0 <= self.min_p < 1.0:
            raise UserError(f"min_p={self.min_p} is outside [0, 1); use e.g. 0.05, or 0 to turn it off")
        if not self.repetition_penalty > 0.0:
            raise UserError(f"repetition_penalty={self.repetition_penalty} must be positive; 1 turns it off")
        if self.beams < 1:
            raise UserError(f"beams={self.beams}; beam search needs at least 1 beam")
        if self.strategy == "beam" and self.num_samples > self.beams:
            raise UserError(f"num_samples={self.num_samples} is more than beams={self.beams}; "
                            "beam search returns at most one sequence per beam")
        if self.greedy and self.num_samples > 1:
            raise UserError(f"num_samples={self.num_samples} with greedy decoding gives the same text each "
                            "time; use strategy sample (temperature > 0) or beam")
        if any(s == "" for s in self.stop_strings):
            raise UserError("an empty stop string would stop before the first token; remove it")

    def checked(self, vocab_size: int, block_size: int) -> "GenerationSettings":
        """These settings, valid for this model, with defaults resolved."""
        self.validate()
        bad = [t for t in self.stop_tokens if not 0 <= t < vocab_size]
        if bad:
            raise UserError(f"stop token {bad[0]} is not in the vocabulary of {vocab_size} ids")
        keep = self.sliding_keep or max(1, block_size // 2)
        if not 1 <= keep <= block_size:
            raise UserError(f"sliding_keep={self.sliding_keep} is outside [1, {block_size}] "
                            "(the model's context)")
        return dataclasses.replace(self, sliding_keep=keep, stop_tokens=tuple(int(t) for t in self.stop_tokens),
                                   stop_strings=tuple(self.stop_strings))
