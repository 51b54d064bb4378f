"""Static shapes of a decoding run, bucketed so that a new prompt length rarely recompiles.

A batch is left-padded to a prompt width from a few powers of two, and the new-token budget
is rounded up the same way; only a new bucket, batch size or strategy compiles again.
"""

from __future__ import annotations

from typing import NamedTuple

MIN_PROMPT_BUCKET = 8
MIN_NEW_BUCKET = 16


class Layout(NamedTuple):
    """Shapes of one compiled decoder (all static).

    batch rows; window = the model's context; prompt = padded prompt width (<= window);
    new = room for generated tokens; cache = KV-cache slots; keep = tokens kept when the
    window slides; sliding = whether the program can slide at all.
    """

    batch: int
    window: int
    prompt: int
    new: int
    cache: int
    keep: int
    sliding: bool


def bucket(n: int, floor: int, cap: int | None = None) -> int:
    """The smallest power of two >= n and >= floor, but at most cap."""
    size = floor
    while size < n:
        size *= 2
    return size if cap is None else min(size, cap)


def prompt_width(longest_prompt: int, window: int) -> int:
    """The padded width of prompts of at most `longest_prompt` tokens."""
    return bucket(longest_prompt, MIN_PROMPT_BUCKET, window)


def make_layout(batch: int, window: int, longest_prompt: int, max_new_tokens: int, sliding: bool,
                keep: int) -> Layout:
    """Shapes for prompts of at most `longest_prompt` (<= window) tokens.

    Without sliding the cache holds prompt and output whole. With sliding it holds one full
    window plus room to decode before the next slide; never fewer slots than one run needs,
    so a run that fits the context never slides.
    """
    prompt = prompt_width(longest_prompt, window)
    new = bucket(max_new_tokens, MIN_NEW_BUCKET)
    cache = prompt + new
    sliding = sliding and cache > window  # else no row can outgrow the window
    if sliding:
        cache = min(cache, window + max(prompt, window - keep))
    return Layout(batch, window, prompt, new, cache, keep, sliding)
