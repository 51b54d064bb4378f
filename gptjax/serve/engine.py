"""One model's request queue and the thread that decodes its batches.

Requests wait in a bounded queue; the decode thread takes as many as fit in a batch of rows
(one row per choice), runs the compiled loop a few tokens at a time, and hands each request
its text as it is decoded. At every such pause requests still waiting join the batch when
there is room (continuous batching), so no request waits for a whole batch to end: the
joining requests are prefilled together into free rows, and the others keep their cache. A
batch is made with room to decode twice its longest budget; when a joining request needs more
room for its tokens, the batch drops the leading cache slots that no live row sees any more.
Only a request that does not fit even so (or joins a one-row batch) makes the live rows and
the new ones be prefilled again together into a new batch (a row's context is its prompt plus
what it has generated). Shapes are bucketed (one row or a full batch, prompt width, token
budget, count of joining rows), so only a new bucket compiles.
While nobody waits to join, each call of the loop starts before the host reads the tokens of
the call before it, so the host's work per call overlaps the device's. A row whose client
went away, or whose text reached a stop string, is marked done at the next call that starts
and leaves the batch.
"""

from __future__ import annotations

import asyncio
import os
import collections
import dataclasses
import threading
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError
from gptjax.generate import decoder
from gptjax.data.chat_template import ChatTemplate
from gptjax.generate.generator import Generator
from gptjax.generate.incremental_text import IncrementalText
from gptjax.generate.layout import Layout, bucket, make_layout, prompt_width
from gptjax.serve import batch_decode


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How to decode one request's choices (already checked against the model)."""

    max_new: int
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    frequency: float = 0.0
    presence: float = 0.0
    seed: int = 0
    stop_tokens: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    strip_leading: bool = False  # the plain chat template leaves a space before the reply


class Piece(NamedTuple):
    choice: int
    text: str


class Finished(NamedTuple):
    choice: int
    reason: str  # "stop" or "length"
    tokens: int  # generated, counting a final stop token


class Failed(NamedTuple):
    message: str


class QueueFull(Exception):
    """The queue holds as many requests as it may; the client should retry later."""


class Job:
    """One prompt of a request: its ids, its sampling, and the events its handler awaits."""

    def __init__(self, prompt: np.ndarray, sampling: Sampling, events: asyncio.Queue, first_choice: int = 0):
        self.prompt = np.asarray(prompt, np.int32)
        self.sampling = sampling
        self.loop = asyncio.get_running_loop()
        self.events = events  # shared by the jobs of one request, whose choices are numbered on
        self.first_choice = first_choice
        self.cancelled = threading.Event()

    def emit(self, event: Piece | Finished | Failed) -> None:
        if not isinstance(event, Failed):
            event = event._replace(choice=event.choice + self.first_choice)
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the request's event loop is closed: nobody listens any more
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()


@jax.jit
def seeded_key(seed: jax.Array, choice: jax.Array) -> jax.Array:
    """Compiled once: run op by op, these key operations cost 0.2 ms, for every row of every request."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), choice)


def row_key(seed: int, choice: int) -> np.ndarray:
    return np.asarray(seeded_key(np.uint32(seed % 2**32), np.uint32(choice)))


class Row:
    """Host-side state of one choice: what it generated so far and its text."""

    def __init__(self, job: Job, choice: int):
        self.job, self.choice = job, choice
        s = job.sampling
        self.key = row_key(s.seed, choice)
        self.ids: list[int] = []
        self.start = 0  # the column of the batch's tokens that holds ids[0]
        self.limit = 0  # the batch's `max_new` for this row: stop when the batch has decoded this many
        self.finished = False
        self.started = not s.strip_leading
        self.text: IncrementalText | None = None
        self.pending = ""  # text shown but not yet sent

    def context(self, block_size: int) -> np.ndarray:
        return np.concatenate([self.job.prompt, np.asarray(self.ids, np.int32)])[-block_size:]

    def show(self, piece: str) -> None:
        if not self.started:
            piece = piece.lstrip(" ")
            self.started = bool(piece)
        self.pending += piece

    def flush(self) -> None:
        """Send the text shown since the last flush as one piece: one event (and one server-sent
        event) per decoded chunk, not per token, keeps the host's work per token small."""
        if self.pending:
            self.job.emit(Piece(self.choice, self.pending))
            self.pending = ""

    def finish(self, reason: str) -> None:
        rest = self.text.finish()  # text held back for a stop string that never came
        if rest:
            self.show(rest)
        self.flush()
        self.finished = True
        self.job.emit(Finished(self.choice, reason, len(self.ids)))


class Snapshot(NamedTuple):
    """What the host reads of a batch after each call of the loop, fetched together."""

    tokens: np.ndarray
    done: np.ndarray
    end: np.ndarray
    key: np.ndarray
    length: int
    index: int  # the cache's write index
    first_slot: np.ndarray

    @classmethod
    def of(cls, view: batch_decode.View) -> "Snapshot":
        tokens, done, end, key, length, index, first = jax.device_get(tuple(view))
        return cls(tokens, done, end, key, int(length), int(index), first)


class Batch(NamedTuple):
    rows: list[Row | None]  # by row of the arrays; None: a row nobody uses
    state: decoder.DecodeState
    layout: Layout
    plan: batch_decode.RowPlan
    knobs: batch_decode.RowKnobs
    host: Snapshot | None = None  # of `state`, once the loop has run on it


class Engine:
    """A model being served: name, tokenizer, chat template, queue and decode thread."""

    def __init__(self, name: str, model: nnx.Module, tokenizer: Tokenizer, *, max_batch: int = 8,
                 max_queue: int = 64, chunk: int = 8, overflow: str = "error", max_tokens: int = 512,
                 gather_s: float = 0.005, shape_floors: tuple[int, int, int] = (1, 1, 1),
                 template: ChatTemplate | None = None):
        """template: the one the model was trained with (`trained_template`); default: the one
        its tokenizer allows."""
        self.name = name
        self.generator = Generator(model, tokenizer)
        self.tokenizer = tokenizer
        try:
            self.template: ChatTemplate | None = template or ChatTemplate(tokenizer)
            self.no_chat = ""
        except UserError as e:
            self.template, self.no_chat = None, str(e)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.chunk = jnp.asarray(chunk, jnp.int32)  # tokens per call of the loop (made once: 0.08 ms a call)
        self.overflow, self.max_tokens, self.gather_s = overflow, max_tokens, gather_s
        self.shape_floors = shape_floors  # least batch rows, prompt width and token budget compiled
        self.created = int(time.time())
        self.waiting: collections.deque[Job] = collections.deque()
        self.running = 0  # live rows in the batch being decoded
        self.generated = 0  # tokens decoded since start, over all requests
        self.cond = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self.serve_forever, name=f"decode-{name}", daemon=True)
        self.thread.start()

    @property
    def block_size(self) -> int:
        return self.generator.block_size

    def submit(self, job: Job) -> None:
        if job.sampling.n > self.max_batch:
            raise ValueError(f"n={job.sampling.n} is more than the batch of {self.max_batch} rows")
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull
            self.waiting.append(job)
            self.cond.notify()

    def stats(self) -> dict:
        return {"waiting": len(self.waiting), "running": self.running, "generated_tokens": self.generated}

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join()

    # ------------------------------------------------------------------ the decode thread

    def serve_forever(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.closing:
                    self.cond.wait()
                if self.closing:
                    return
            time.sleep(self.gather_s)  # requests that arrive together start together
            rows: list[Row] = []
            try:
                self.decode(rows)
            except Exception as e:  # noqa: BLE001 - the thread must outlive one bad batch
                for job in {id(r.job): r.job for r in rows if not r.finished}.values():
                    job.emit(Failed(f"generation failed: {type(e).__name__}: {e}"))
            self.running = 0

    def admit(self, room: int) -> list[Row]:
        """Rows of the waiting requests that fit in `room` rows, oldest first."""
        rows: list[Row] = []
        with self.cond:
            while self.waiting and len(rows) + self.waiting[0].sampling.n <= room:
                job = self.waiting.popleft()
                if not job.cancelled.is_set():
                    rows += [Row(job, c) for c in range(job.sampling.n)]
        return rows

    def decode(self, rows: list[Row]) -> None:
        """Decode until no row is live and nobody waits; `rows` is filled in place (for errors)."""
        batch = None
        while True:
            live = self.live(rows)
            joining = self.admit(self.max_batch - len(live)) if self.waiting else []
            if joining:
                rows[:] = live + joining
                slots = None if batch is None else self.slots_to_drop(batch, joining)
                batch = self.prefill(rows) if slots is None else self.join(batch, joining, slots)
            elif not live:
                return
            self.running = len(live) + len(joining)
            batch = self.run(batch, rows)

    @staticmethod
    def live(rows: list[Row]) -> list[Row]:
        """The rows not finished; a row whose client went away is finished here."""
        for row in rows:
            row.finished |= row.job.cancelled.is_set()
        return [r for r in rows if not r.finished]

    def call(self, batch: Batch) -> tuple[decoder.DecodeState, batch_decode.View]:
        """Start one call of the compiled loop on the batch (it runs while the host goes on)."""
        leaving = np.array([r is None or r.finished for r in batch.rows])
        return batch_decode.advance(self.generator.graphdef, self.generator.params, batch.state, leaving,
                                    batch.knobs, self.chunk, layout=batch.layout, plan=batch.plan)

    def run(self, batch: Batch, rows: list[Row]) -> Batch:
        """Call the loop and hand out its tokens until a request waits to join or no row is live.
        The next call starts before the host reads the last one's tokens (fetching them, text,
        events), so that this work overlaps the next call's compute instead of leaving the
        device idle: a row that the host ends (a stop string, a client gone) leaves one call
        later, and what it decodes meanwhile is never shown. Returns the batch with no call in
        flight, its `host` read from its `state`."""
        state, view = self.call(batch)
        while True:
            ahead = None
            if not self.waiting and self.live(rows):
                ahead = self.call(batch._replace(state=state))
                state = ahead[0]
            batch = batch._replace(state=state, host=Snapshot.of(view))
            self.collect(batch)
            if ahead is None:
                return batch
            view = ahead[1]

    def prefill(self, rows: list[Row]) -> Batch:
        """A batch state for these rows, each prompt followed by what the row generated so far."""
        block = self.block_size
        least_rows, least_prompt, least_new = self.shape_floors
        # One row alone decodes at batch 1; more decode at the full batch, so that requests
        # joining and leaving do not make a new shape (compile) for every count of rows.
        padded = rows + [rows[0]] * (max(least_rows, 1 if len(rows) == 1 else self.max_batch) - len(rows))
        contexts = [r.context(block) for r in padded]
        budgets = [r.job.sampling.max_new - len(r.ids) for r in padded]
        room = max(budgets) * (1 if len(padded) == 1 else 2)  # a batch that others may join has room for them
        layout = make_layout(len(padded), block, min(block, max(least_prompt, *map(len, contexts))),
                             max(least_new, room), self.overflow == "sliding", max(1, block // 2))
        prompts, lengths = decoder.right_align(contexts, layout.prompt)
        keys = jnp.asarray(np.stack([r.key for r in padded]))
        st = decoder.start(self.generator.graphdef, self.generator.params, jnp.asarray(prompts),
                           jnp.asarray(lengths), keys, layout=layout)
        counts = np.zeros((len(padded), self.generator.cfg.vocab_size), np.int32)
        for b, r in enumerate(rows):
            np.add.at(counts[b], np.asarray(r.ids, np.int64), 1)
            self.place(r, layout.window, budgets[b])
        # Placed like the state's own arrays, or each layout's first `advance` compiles twice.
        st = st._replace(counts=jax.device_put(counts, st.counts.sharding),
                         done=jax.device_put(np.arange(len(padded)) >= len(rows), st.done.sharding))
        return self.batch(rows + [None] * (len(padded) - len(rows)), st, layout)

    def slots_to_drop(self, batch: Batch, joining: list[Row]) -> int | None:
        """How many leading cache slots the running batch must drop for every joining row to take
        a free row of it, or None if they cannot: a row needs W slots before the write index for
        its context padded to W, and room after it for its tokens; the slots that can be dropped
        are those before every live row's first, among the ones decoded since the batch began."""
        layout, host = batch.layout, batch.host
        live = [b for b, r in enumerate(batch.rows) if r is not None and not r.finished]
        if layout.batch - len(live) < len(joining):
            return None
        generated, index = host.length - layout.window, host.index
        droppable = min([generated, *host.first_slot[live]])
        contexts = [len(r.context(self.block_size)) for r in joining]
        budgets = [r.job.sampling.max_new - len(r.ids) for r in joining]
        slots = max(0, generated + max(budgets) - layout.new)
        fits = (slots <= droppable and max(prompt_width(c, layout.window) for c in contexts) <= index - slots
                and (layout.sliding or all(c + b <= layout.window for c, b in zip(contexts, budgets))))
        return slots if fits else None

    def join(self, batch: Batch, joining: list[Row], slots: int) -> Batch:
        """The running batch, its first `slots` cache slots dropped, with the joining rows prefilled
        into free rows (see `slots_to_drop`)."""
        rows, st, layout = list(batch.rows), batch.state, batch.layout
        if slots:
            st = batch_decode.drop(st, jnp.asarray(slots, jnp.int32))
            for row in rows:
                if row is not None:
                    row.start, row.limit = row.start - slots, row.limit - slots
        length, free = batch.host.length - slots, [b for b, r in enumerate(rows) if r is None or r.finished]
        contexts = [r.context(self.block_size) for r in joining]
        prompts, lengths = decoder.right_align(contexts, prompt_width(max(map(len, contexts)), layout.window))
        targets, keys = free[:len(joining)], np.stack([r.key for r in joining])
        # Joining rows are prefilled together, their count padded to a power of two (few shapes to
        # compile) by repeating the first, which writes the same values to the same row again.
        pad = [0] * (bucket(len(joining), 1, layout.batch) - len(joining))
        st = batch_decode.insert(self.generator.graphdef, self.generator.params, st,
                                 jnp.asarray(np.concatenate([prompts, prompts[pad]])),
                                 jnp.asarray(np.concatenate([lengths, lengths[pad]])),
                                 jnp.asarray(targets + [targets[0]] * len(pad), jnp.int32),
                                 jnp.asarray(np.concatenate([keys, keys[pad]])), layout=layout)
        for slot, row in zip(targets, joining):
            rows[slot] = row
            self.place(row, length, length - layout.window + row.job.sampling.max_new - len(row.ids))
        return self.batch(rows, st, layout)

    def place(self, row: Row, column: int, limit: int) -> None:
        """Note where a row's next token lands in its batch, and when the batch stops it."""
        if row.text is None:
            row.text = IncrementalText(self.tokenizer, row.job.sampling.stop_strings)
        row.start, row.limit = column - len(row.ids), limit

    def batch(self, rows: list[Row | None], st: decoder.DecodeState, layout: Layout) -> Batch:
        """A Batch with the knobs and plan of its rows (a row nobody uses gets neutral knobs)."""
        unused = Sampling(max_new=0)
        samplings = [unused if r is None else r.job.sampling for r in rows]
        stop = np.zeros((len(rows), self.generator.cfg.vocab_size), bool)
        for b, s in enumerate(samplings):
            stop[b, list(s.stop_tokens)] = True
        values = np.array([[s.temperature, s.top_p, s.frequency, s.presence] for s in samplings], np.float32)
        limits = np.array([0 if r is None else r.limit for r in rows], np.int32)
        # Built on the host and sent in one transfer: an array made on the device per knob costs
        # a dispatch each, on the thread that decodes.
        knobs = jax.device_put(batch_decode.RowKnobs(*np.split(values, 4, axis=1), limits, stop))
        live = [s for r, s in zip(rows, samplings) if r is not None and not r.finished]
        plan = batch_decode.RowPlan(top_p=any(s.top_p < 1 and s.temperature > 0 for s in live),
                                    penalties=any(s.frequency != 0 or s.presence != 0 for s in live))
        return Batch(rows, st, layout, plan, knobs)

    def collect(self, batch: Batch) -> None:
        """Hand each row's new tokens to its request as text; finish the rows that ended."""
        host = batch.host
        tokens, done, end, length = host.tokens, host.done, host.end, host.length
        for b, row in enumerate(batch.rows):
            if row is None or row.finished:
                continue
            row.key = host.key[b]
            stops = row.job.sampling.stop_tokens
            for token in tokens[b, row.start + len(row.ids):min(int(end[b]), length)]:
                row.ids.append(int(token))
                self.generated += 1
                if int(token) in stops:
                    break
                row.show(row.text.push(int(token)))
                if row.text.stopped:
                    break
            if row.text.stopped or (row.ids and row.ids[-1] in stops):
                row.finish("stop")
            elif done[b]:
                row.finish("length")
            else:
                row.flush()


def model_name(workdir: str) -> str:
    """A workdir's model is named after its folder."""
    return os.path.basename(os.path.normpath(workdir))


def load_engines(workdirs: list[str], quantize: str = "none", **options) -> dict[str, Engine]:
    """One engine per workdir, by name, and one per LoRA adapter saved in a workdir's adapters/,
    named `<workdir>:<adapter>` (a clone sharing the base's arrays); two workdirs of the same name
    are refused. `quantize`: none or int8, applied to each model served."""
    from gptjax.data.chat_template import trained_template
    from gptjax.model.adapted import AdapterSet, check_quantize, servable
    from gptjax.workdir import adapters_dir, load_model

    check_quantize(quantize)
    names = [model_name(w) for w in workdirs]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise UserError(f"two workdirs are both named {twice!r}, and a model is named after its folder; "
                        "serve folders with different names")
    engines = {}
    for name, workdir in zip(names, workdirs):
        model, tokenizer, _ = load_model(workdir)
        adapters = AdapterSet(model, adapters_dir(workdir))
        models = {name: model, **{f"{name}:{a}": adapters.copy_with(a) for a in adapters.known}}
        template = trained_template(workdir, tokenizer)
        for served, m in models.items():
            engines[served] = Engine(served, servable(m, quantize), tokenizer, template=template, **options)
    return engines
