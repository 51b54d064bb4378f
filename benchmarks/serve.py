"""The server under load: many concurrent streaming clients against `python -m gptjax.serve` on 127.0.0.1.

    python -m benchmarks.serve [--workdir runs/x] [--clients 100] [--max_tokens 32] [--time_limit 300]

Without --workdir a tiny model is trained for a few steps into a temporary folder (the
figures then measure the server more than the model). The server runs in its own process;
after warm-up requests (which compile), two rounds of `--clients` clients each stream one
chat completion; a round prints requests completed, errors (bar: 0), time to first token
p50/p99, total generated tokens/s, and the server's peak RSS (bar: no growth from round 1 to
round 2). Then 1 client and 8 clients each send `--sequential` requests one after another,
`--pairs` times in turn, and the ratio of their median total tokens/s is printed beside the
target of 4x and beside two limits measured in the same run: the server's compiled decode loop
alone (no engine around it), on the batches of 1 and of 8 rows that these requests make (a model
small enough that one row's step is compute-bound gains little from 8 rows, and no server can
beat its decode loop), printed with the flop/s its 8-row steps reach, the flop/s they would need
for 4x, and what XLA's dense float32 product reaches on one core (in a process pinned to it); and the
serving engine alone (no HTTP), 8 clients awaiting it against 1, which says how much of the
gap is the engine's and how much the HTTP side's. Every round is bounded in time; a request
still open when its round's time is up counts as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import httpx
import numpy as np

MESSAGES = [{"role": "user", "content": "Speak, speak."}]


def tiny_workdir(root: str) -> str:
    """A small model trained for a few steps on a few repeated lines (BPE, so it has chat tokens)."""
    from configs.base import get_config
    from gptjax.train import run

    corpus = os.path.join(root, "corpus")
    os.makedirs(corpus)
    with open(os.path.join(corpus, "plays.txt"), "w", encoding="utf-8") as f:
        f.write("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 200)
    c = get_config("smoke")
    c.data.source, c.data.path, c.data.cache_dir = "files", corpus, os.path.join(root, "cache")
    c.data.tokenizer, c.data.vocab_size, c.data.test_fraction = "bpe", 300, 0.1
    c.model.block_size = 128
    c.train.steps = c.train.steps_per_call = c.train.eval_every = c.train.checkpoint_every = 5
    c.train.log_every = 5
    c.sample.prompts, c.sample.max_new_tokens = ["First"], 4
    workdir = os.path.join(root, "tiny")
    run(c, workdir)
    return workdir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid: int) -> dict[str, float]:
    """The process's resident set now and at its peak, in MiB (Linux /proc)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


async def stream_one(http: httpx.AsyncClient, model: str, max_tokens: int) -> tuple[float, int]:
    """(seconds to the first token, tokens generated) of one streamed chat completion."""
    body = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, tokens = None, None
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    if tokens is None:
        raise RuntimeError("the stream ended without usage")
    return (time.perf_counter() - start if first is None else first), tokens


async def load(url: str, model: str, clients: int, sequential: int, max_tokens: int, limit_s: float) -> dict:
    """`clients` concurrent clients, each sending `sequential` requests in turn, for at most limit_s."""
    ttfts, tokens, errors = [], 0, []

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for _ in range(sequential):
            try:
                ttft, n = await stream_one(http, model, max_tokens)
                ttfts.append(ttft)
                tokens += n
            except Exception as e:  # noqa: BLE001 - every failure is counted, none ends the run
                errors.append(str(e) or type(e).__name__)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=limit_s, limits=limits) as http:
        start = time.perf_counter()
        tasks = [asyncio.create_task(client(http)) for _ in range(clients)]
        done, pending = await asyncio.wait(tasks, timeout=limit_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        seconds = time.perf_counter() - start
    unfinished = clients * sequential - len(ttfts) - len(errors)
    errors += ["timed out"] * unfinished
    return {"completed": len(ttfts), "errors": errors, "ttft": np.array(ttfts), "tokens": tokens,
            "seconds": seconds}


def report(name: str, r: dict, mem: dict[str, float] | None = None) -> None:
    ttft = r["ttft"] if len(r["ttft"]) else np.array([np.nan])
    line = (f"{name:>10}: {r['completed']} completed, {len(r['errors'])} errors (bar: 0), "
            f"TTFT p50 {np.percentile(ttft, 50) * 1e3:.0f} ms p99 {np.percentile(ttft, 99) * 1e3:.0f} ms, "
            f"{r['tokens'] / r['seconds']:.0f} tokens/s total ({r['tokens']} in {r['seconds']:.1f} s)")
    if mem:
        line += f", server RSS {mem['VmRSS']:.0f} MiB (peak {mem['VmHWM']:.0f} MiB)"
    print(line, flush=True)
    if r["errors"]:
        print(f"{'':>12}first error: {r['errors'][0]}")


class LoopLimit(NamedTuple):
    """The serving loop alone at 1 and 8 rows, and the rate of XLA's dense product on one core."""

    one_row_s: float     # a step of one row
    eight_rows_s: float  # a step of 8 rows
    flops: float         # of one token (XLA's count)
    core_rate: float     # flop/s of XLA's dense float32 product on one core

    @property
    def ratio(self) -> float:
        return 8 * self.one_row_s / self.eight_rows_s

    @property
    def rate_for_4x(self) -> float:
        """Flop/s 8-row steps must reach for 8 rows to give 4 times one row's tokens/s."""
        return 8 * self.flops / (2 * self.one_row_s)


def loop_limit(workdir: str, tokens: int, calls: int = 30) -> LoopLimit:
    """Steps of the server's own compiled loop (`batch_decode.advance`, the batches the engine
    makes for requests of `tokens` tokens, its chunk of tokens a call), p10 over `calls` batches
    decoded to the end, in this process while the server is idle."""
    import jax
    from gptjax.serve import batch_decode
    from gptjax.serve.engine import Engine, Job, Row, Sampling
    from gptjax.workdir import load_model

    model, tokenizer, _ = load_model(workdir)
    engine = Engine("bench", model, tokenizer)
    prompt = np.asarray(tokenizer.encode(MESSAGES[0]["content"]), np.int32)

    async def rows(n: int) -> list[Row]:  # a Job belongs to an event loop
        job = Job(prompt, Sampling(max_new=tokens, n=n), asyncio.Queue())
        return [Row(job, c) for c in range(n)]

    step, chunk = {}, int(engine.chunk)
    try:
        for n in (1, 8):
            batch_rows, seconds = asyncio.run(rows(n)), []
            for timed in [False] + [True] * calls:  # the first batch compiles
                batch = engine.prefill(batch_rows)
                st, leaving = jax.block_until_ready(batch.state), np.zeros(batch.layout.batch, bool)
                while not np.all(jax.device_get(st.done)):
                    started = time.perf_counter()
                    st, _ = batch_decode.advance(engine.generator.graphdef, engine.generator.params, st, leaving,
                                                 batch.knobs, engine.chunk, layout=batch.layout, plan=batch.plan)
                    jax.block_until_ready(st)
                    if timed:
                        seconds.append((time.perf_counter() - started) / chunk)
            step[n] = float(np.percentile(seconds, 10))
    finally:
        engine.close()
    return LoopLimit(step[1], step[8], token_flops(model, engine.block_size), core_rate())


def token_flops(model, width: int) -> float:
    """XLA's count of the flops of a forward over a context of `width` tokens, per token."""
    import jax
    from flax import nnx

    graphdef, params = nnx.split(model)
    forward = jax.jit(lambda p, ids: nnx.merge(graphdef, p)(ids)).lower(params, jax.numpy.zeros((1, width), int))
    return forward.compile().cost_analysis()["flops"] / width


CORE_RATE = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before jax starts its threads
import jax, jax.numpy as jnp
from benchmarks.decode import best_time
a = jnp.ones((1024, 1024), jnp.float32)
product = jax.jit(lambda a: a @ a)
print(2 * 1024**3 / best_time(lambda: product(a), 10))
"""


def core_rate() -> float:
    """Flop/s of XLA's float32 product of two 1024 x 1024 matrices on one core, in a process of
    its own pinned to that core (a thread's affinity holds only for the threads it starts)."""
    return float(subprocess.run([sys.executable, "-c", CORE_RATE], check=True, capture_output=True,
                                text=True).stdout)


def engine_ratio(workdir: str, sequential: int, max_tokens: int, pairs: int) -> float:
    """Total tokens/s of 8 clients over 1 client, each sending `sequential` requests to an engine
    in this process (medians of `pairs` interleaved rounds, after warm-up rounds)."""
    from gptjax.serve.engine import Engine, Failed, Finished, Job, Sampling
    from gptjax.workdir import load_model

    model, tokenizer, _ = load_model(workdir)
    prompt = np.asarray(tokenizer.encode(MESSAGES[0]["content"]), np.int32)

    async def rounds() -> float:
        engine = Engine("bench", model, tokenizer)
        async def client(tokens: list[int]) -> None:
            for seed in range(sequential):
                events: asyncio.Queue = asyncio.Queue()
                engine.submit(Job(prompt, Sampling(max_new=max_tokens, seed=seed), events))
                while not isinstance(event := await events.get(), Finished):
                    if isinstance(event, Failed):
                        raise RuntimeError(event.message)
                tokens.append(event.tokens)

        async def rate(clients: int) -> float:
            tokens: list[int] = []
            started = time.perf_counter()
            await asyncio.gather(*(client(tokens) for _ in range(clients)))
            return sum(tokens) / (time.perf_counter() - started)

        try:
            for clients in (1, 8, 8):  # compiles the shapes that requests one after another make
                await rate(clients)
            rates = {1: [], 8: []}
            for _ in range(pairs):
                for clients, got in rates.items():
                    got.append(await rate(clients))
            return float(np.median(rates[8]) / np.median(rates[1]))
        finally:
            engine.close()

    return asyncio.run(rounds())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="a trained model to serve (default: train a tiny one)")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--sequential", type=int, default=24, help="requests per client in the 1 vs 8 comparison")
    p.add_argument("--pairs", type=int, default=3, help="rounds of 1 and of 8 clients in that comparison")
    p.add_argument("--time_limit", type=float, default=300, help="seconds each round may take at most")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:
        workdir = args.workdir or tiny_workdir(root)
        model = os.path.basename(os.path.normpath(workdir))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "gptjax.serve", "--workdir", workdir, "--port", str(port),
                                   "--max_queue", str(max(128, 2 * args.clients))])
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            run = lambda clients, sequential=1: asyncio.run(  # noqa: E731
                load(url, model, clients, sequential, args.max_tokens, args.time_limit))
            # Compile the shapes of one row and of a full batch, with the joins, prompt widths and
            # token budgets that requests arriving one after another make: a server that has run a
            # while has them (and the persistent compilation cache keeps them across restarts).
            for clients, sequential in ((1, 2), (8, args.sequential), (8, args.sequential)):
                report("warm-up", run(clients, sequential))
            peaks = []
            for i in (1, 2):
                result = run(args.clients)
                mem = memory(server.pid)
                peaks.append(mem["VmHWM"])
                report(f"round {i}", result, mem)
            print(f"server peak RSS: {peaks[0]:.0f} MiB after round 1, {peaks[1]:.0f} MiB after round 2 "
                  f"(bar: no growth; {peaks[1] - peaks[0]:+.0f} MiB)")
            rates: dict[int, list[float]] = {1: [], 8: []}
            for _ in range(args.pairs):  # interleaved, so that both see the same hour of the machine
                for clients in rates:
                    result = run(clients, args.sequential)
                    report(f"{clients} client{'s' if clients > 1 else ''}", result)
                    rates[clients].append(result["tokens"] / result["seconds"])
            ratio = np.median(rates[8]) / max(np.median(rates[1]), 1e-9)
            loop = loop_limit(workdir, args.max_tokens)
            alone = engine_ratio(workdir, args.sequential, args.max_tokens, args.pairs)
            print(f"the server's decode loop alone: a step of 1 row {loop.one_row_s * 1e6:.0f} us, of 8 rows "
                  f"{loop.eight_rows_s * 1e6:.0f} us ({8 * loop.flops / loop.eight_rows_s / 1e9:.1f} GFLOP/s at "
                  f"{loop.flops / 1e6:.2f} MFLOP a token), {loop.ratio:.1f}x the tokens/s at 8 rows; 4x needs 8-row "
                  f"steps of {2 * loop.one_row_s * 1e6:.0f} us, {loop.rate_for_4x / 1e9:.1f} GFLOP/s (XLA's dense "
                  f"float32 product reaches {loop.core_rate / 1e9:.1f} on one core)")
            print(f"8 clients give {ratio:.1f}x the total tokens/s of 1 client (medians of {args.pairs}; target: "
                  f">= 4x; the decode loop alone gives {loop.ratio:.1f}x at 8 rows against 1, and the engine "
                  f"without HTTP {alone:.1f}x at 8 clients against 1)")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
