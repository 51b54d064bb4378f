"""The one generation API: prompts and `GenerationSettings` in, completions (or a text stream) out.

Host-side work lives here: encoding and checking prompts, applying the overflow policy,
batching with left padding, choosing compiled shapes, and turning ids back into text.
The compiled loops are in `decoder` (greedy and sampling) and `beam_search`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError
from gptjax.generate import beam_search, decoder
from gptjax.generate import logits as logits_lib
from gptjax.generate.incremental_text import IncrementalText
from gptjax.generate.layout import Layout, bucket, make_layout
from gptjax.generate.settings import GenerationSettings
from gptjax.model.gpt import GPT

STOP_CHECK_EVERY = 16  # tokens decoded between looks for stop strings
STREAM_CHUNK = 4           # tokens decoded for the first streamed piece of text (a quick first token) ...
STREAM_PIECE_SECONDS = 0.1  # ... doubling per piece while a piece takes less than this: a small model
                            # is not a host round trip per few tokens, a large one still streams smoothly


class Completion(NamedTuple):
    tokens: np.ndarray   # generated ids, without a final stop token
    text: str            # their text, cut before any stop string
    finish_reason: str   # "stop" (stop token or string) or "length"
    score: float | None = None  # beam search: length-penalised log-probability


class HashedGraphDef(nnx.GraphDef):
    """A model's GraphDef that is hashed once. The compiled loops take the GraphDef as a static
    argument, which jax hashes on every call, and hashing a GraphDef walks the whole model:
    0.16 ms a call for the one-layer default model, 1.9 ms for GPT-2 small."""

    __slots__ = ("digest",)

    def __init__(self, graphdef: nnx.GraphDef):
        super().__init__(*(getattr(graphdef, f.name) for f in dataclasses.fields(graphdef)))
        object.__setattr__(self, "digest", hash(graphdef))

    def __hash__(self) -> int:
        return self.digest


class Generator:
    """A trained GPT and its tokenizer, ready to decode with any strategy."""

    def __init__(self, model: nnx.Module, tokenizer: Tokenizer, batch_size: int = 16):
        if not isinstance(model, GPT):
            raise UserError(f"generation needs a GPT model (it decodes with a KV cache); "
                            f"this workdir holds a {type(model).__name__}")
        graphdef, self.params = nnx.split(model)
        self.graphdef = HashedGraphDef(graphdef)
        self.cfg = model.cfg
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @property
    def block_size(self) -> int:
        return self.cfg.block_size

    def encode(self, text: str, where: str = "the prompt") -> np.ndarray:
        """Ids of a prompt; a character missing from a char vocabulary is refused by name."""
        tok = self.tokenizer
        if tok.kind == "char":
            known = set(getattr(tok, "chars", ""))
            unknown = next((c for c in text if c not in known), None)
            if unknown is not None:
                raise UserError(f"{where} has the character {unknown!r} (U+{ord(unknown):04X}), which the "
                                "model's char vocabulary lacks; remove or replace it")
        return np.asarray(tok.encode(text), np.int32)

    def generate_text(self, prompts: Sequence[str], settings: GenerationSettings) -> list[list[Completion]]:
        return self.generate([self.encode(p) for p in prompts], settings)

    def generate(self, prompts: Sequence[np.ndarray], settings: GenerationSettings) -> list[list[Completion]]:
        """`settings.num_samples` completions of each prompt (beam search: best first)."""
        s = settings.checked(self.cfg.vocab_size, self.block_size)
        fitted = [self.fit(p, s) for p in prompts]
        per_batch = max(1, self.batch_size // (s.beams if s.strategy == "beam" else s.num_samples))
        out: list[list[Completion]] = []
        for i in range(0, len(fitted), per_batch):
            group = fitted[i:i + per_batch]
            out += self.beam(group, s) if s.strategy == "beam" else self.sample(group, s)
        return out

    def stream(self, prompt: np.ndarray, settings: GenerationSettings) -> Iterator[str]:
        """Text of one completion, piece by piece as it is decoded, never half a character."""
        s = settings.checked(self.cfg.vocab_size, self.block_size)
        if s.strategy == "beam" or s.num_samples > 1:
            raise UserError("streaming gives one greedy or sampled completion; "
                            "use strategy greedy or sample with num_samples 1")
        layout, st = self.begin([self.fit(prompt, s)], s)
        plan, knobs = logits_lib.plan_and_knobs(s, self.cfg.vocab_size)
        text = IncrementalText(self.tokenizer, s.stop_strings)
        emitted, chunk = 0, STREAM_CHUNK
        while True:
            started = time.perf_counter()
            st = self.advance(st, s, layout, plan, knobs, chunk)
            row = self.generated_ids(st, layout, 0)
            if time.perf_counter() - started < STREAM_PIECE_SECONDS:
                chunk *= 2
            for token in row[emitted:]:
                piece = text.push(token)
                if piece:
                    yield piece
            emitted = len(row)
            if bool(st.done[0]) or text.stopped:
                break
        rest = text.finish()
        if rest:
            yield rest

    # ------------------------------------------------------------------ batches

    def fit(self, prompt: np.ndarray, s: GenerationSettings) -> np.ndarray:
        """The prompt under the overflow policy: refused, or cut to its last window of tokens."""
        prompt = np.asarray(prompt, np.int32).reshape(-1)
        if len(prompt) == 0:
            start = self.tokenizer.special_ids.get("<|endoftext|>")
            if start is None:
                raise UserError("the prompt is empty; give at least one character to continue")
            prompt = np.array([start], np.int32)
        if s.overflow == "error" and len(prompt) + s.max_new_tokens > self.block_size:
            raise UserError(f"the prompt has {len(prompt)} tokens and max_new_tokens={s.max_new_tokens}: more "
                            f"than the model's context of {self.block_size} tokens; shorten the prompt, lower "
                            "max_new_tokens, or use overflow=sliding to drop the oldest tokens")
        return prompt[-self.block_size:]

    def begin(self, rows: list[np.ndarray], s: GenerationSettings,
              pad: bool = True) -> tuple[Layout, decoder.DecodeState]:
        """Prefill the rows, padded (unless told not to) with done copies of the first up to a
        bucketed batch size."""
        real = len(rows)
        if pad:
            rows = rows + [rows[0]] * (bucket(real, 1) - real)
        layout = make_layout(len(rows), self.block_size, max(len(r) for r in rows), s.max_new_tokens,
                             s.overflow == "sliding", s.sliding_keep)
        prompts, lengths = decoder.right_align(rows, layout.prompt)
        st = decoder.start(self.graphdef, self.params, jnp.asarray(prompts), jnp.asarray(lengths),
                           jax.random.key(s.seed), layout=layout)
        # Placed like the state's own `done`: an array of another sharding would make the first
        # `advance` a program of its own, traced and compiled (or read from the cache) twice.
        return layout, st._replace(done=jax.device_put(jnp.arange(layout.batch) >= real, st.done.sharding))

    def stop_mask(self, s: GenerationSettings) -> jax.Array:
        mask = np.zeros(self.cfg.vocab_size, bool)
        mask[list(s.stop_tokens)] = True
        return jnp.asarray(mask)

    def advance(self, st, s: GenerationSettings, layout: Layout, plan, knobs, steps: int):
        return decoder.advance(self.graphdef, self.params, st, knobs, self.stop_mask(s),
                               jnp.asarray(s.max_new_tokens, jnp.int32), jnp.asarray(steps, jnp.int32),
                               layout=layout, plan=plan)

    def generated_ids(self, st, layout: Layout, row: int) -> np.ndarray:
        # Sliced on the host: a device slice with Python bounds compiles once per new length,
        # which made every streamed piece of a long run compile a program of its own.
        end = min(int(np.asarray(st.end)[row]), int(st.length))
        return np.asarray(st.tokens)[row, layout.window:end]

    def sample(self, prompts: list[np.ndarray], s: GenerationSettings) -> list[list[Completion]]:
        rows = [p for p in prompts for _ in range(s.num_samples)]
        layout, st = self.begin(rows, s)
        plan, knobs = logits_lib.plan_and_knobs(s, self.cfg.vocab_size)
        if not s.stop_strings:
            st = self.advance(st, s, layout, plan, knobs, s.max_new_tokens)
        else:  # stop rows whose text reached a stop string, looking every few tokens
            texts = [IncrementalText(self.tokenizer, s.stop_strings) for _ in rows]
            seen = [0] * len(rows)
            while not bool(jnp.all(st.done)):
                st = self.advance(st, s, layout, plan, knobs, STOP_CHECK_EVERY)
                for r, text in enumerate(texts):
                    ids = self.generated_ids(st, layout, r)
                    for token in ids[seen[r]:]:
                        text.push(token)
                    seen[r] = len(ids)
                stopped = np.zeros(layout.batch, bool)
                stopped[:len(texts)] = [t.stopped for t in texts]
                st = st._replace(done=st.done | jnp.asarray(stopped))
        done = [self.completion(self.generated_ids(st, layout, r), s) for r in range(len(rows))]
        return [done[i:i + s.num_samples] for i in range(0, len(done), s.num_samples)]

    def beam(self, prompts: list[np.ndarray], s: GenerationSettings) -> list[list[Completion]]:
        padded = prompts + [prompts[0]] * (bucket(len(prompts), 1) - len(prompts))
        rows = [p for p in padded for _ in range(s.beams)]
        layout, st = self.begin(rows, s, pad=False)
        found = beam_search.search(self.graphdef, self.params, st, self.stop_mask(s),
                                   jnp.asarray(s.max_new_tokens, jnp.int32),
                                   jnp.asarray(s.length_penalty, jnp.float32), layout=layout, beams=s.beams,
                                   early_stopping=s.early_stopping)
        tokens, lengths = np.asarray(found.pool_tokens), np.asarray(found.pool_lengths)
        scores = np.asarray(found.pool_scores)
        out = []
        for p in range(len(prompts)):
            picks = [k for k in range(s.beams) if np.isfinite(scores[p, k])][:s.num_samples]
            out.append([self.completion(tokens[p, k, :lengths[p, k]], s)._replace(score=float(scores[p, k]))
                        for k in picks])
        return out

    def completion(self, ids: np.ndarray, s: GenerationSettings) -> Completion:
        """Ids and text of one generated row, cut at its stop token or stop string."""
        reason = "length"
        if len(ids) and int(ids[-1]) in s.stop_tokens:
            ids, reason = ids[:-1], "stop"
        text = IncrementalText(self.tokenizer, s.stop_strings)
        for n, token in enumerate(ids):
            text.push(token)
            if text.stopped:
                return Completion(np.asarray(ids[:n + 1]), text.text, "stop")
        text.finish()
        return Completion(np.asarray(ids), text.text, reason)
