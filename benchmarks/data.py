"""Throughput and memory of preparing and streaming a large corpus (issue: data at scale).

    python -m benchmarks.data                          # a 0.1 GB corpus, RSS at 0.1 and 1 GB
    python -m benchmarks.data --gb 1 --rss_gb 0.1,2    # the full run (several minutes a GB)

Generates a corpus of .jsonl documents (made-up words with Zipfian frequencies, seeded), and
prints:
* preparation throughput (MB/s of text, tokens/s) beside HF `tokenizers`' own `encode_batch`
  rate on the same machine and the same text: the limit preparation can approach;
* peak RSS of preparation and of reading batches, each in a fresh process, at each size
  of --rss_gb (it should not grow with the corpus);
* the input pipeline's sustained tokens/s for GPT-2-small batches (8 x 1024) from the shards,
  direct and through grain, beside the target of 2M tokens/s per host, and the time from
  opening the prepared directory to the first batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

TARGET_TOKENS_PER_SEC = 2e6
BATCH, BLOCK = 8, 1024


def write_corpus(path: str, gb: float, seed: int = 0) -> int:
    """About `gb` GB of .jsonl documents of 50-2000 words; returns the bytes of text written."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkqjxz"))
    words = ["".join(rng.choice(letters, rng.integers(1, 10))) for _ in range(30_000)]
    weights = 1 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    target, written = int(gb * 1e9), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            lengths = rng.integers(50, 2000, 256)
            ids = rng.choice(len(words), lengths.sum(), p=weights)
            for doc in np.split(ids, np.cumsum(lengths)[:-1]):
                sentences = np.array_split(doc, max(1, len(doc) // 15))
                text = ". ".join(" ".join(words[i] for i in s).capitalize() for s in sentences) + ".\n"
                f.write(json.dumps({"text": text}) + "\n")
                written += len(text)
    return written


def config_for(corpus: str, vocab: int, sample_chars: int, shard_tokens: int):
    from configs.gpt2_124m import get_config

    c = get_config()
    c.data.path, c.data.vocab_size, c.data.tokenizer_sample_chars = corpus, vocab, sample_chars
    c.data.shard_tokens = shard_tokens
    return c


def peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM). Not getrusage's ru_maxrss: on Linux a child
    inherits its parent's resident size at fork as its maximum, so a stage run from the process
    that just generated a corpus would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_prepare(args) -> dict:
    from gptjax.data.shard_prepare import prepare_shards

    c = config_for(args.corpus, args.vocab, args.sample_chars, args.shard_tokens)
    start = time.perf_counter()
    manifest = prepare_shards(c.data, c.seed, args.out)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": sum(s["bytes"] for s in manifest["splits"].values()),
            "tokens": sum(s["tokens"] for s in manifest["splits"].values()), "peak_rss_mb": peak_rss_mb()}


def stage_read(args) -> dict:
    """Time to the first batch, then sustained tokens/s of both loaders."""
    import jax

    from gptjax.data import batches
    from gptjax.data.grain_windows import GrainBatches
    from gptjax.data.shard_reader import load_prepared
    from gptjax.train import mesh as mesh_lib

    mesh = mesh_lib.build_mesh(dict(data=1, fsdp=1, tensor=1, preset=""), jax.devices()[:1])
    sharding = mesh_lib.batch_sharding(mesh, leading=2)
    start = time.perf_counter()
    tokens = load_prepared(args.out).tokens["train"]
    batches.train_batch(tokens, 0, 0, 1, 1, BATCH, BLOCK, sharding).block_until_ready()
    out = {"first_batch_seconds": time.perf_counter() - start}
    steps = args.read_steps
    grain = GrainBatches(tokens, 0, 10 * steps, 1, lambda step: BATCH, BLOCK, threads=args.threads, prefetch=16)
    loaders = {"direct": lambda step: batches.train_batch(tokens, 0, step, 1, 1, BATCH, BLOCK, sharding),
               "grain": lambda step: grain.train_batch(step, 1, sharding)}
    for name, read in loaders.items():
        read(steps).block_until_ready()  # warm: the iterator starts and fills its buffer
        start = time.perf_counter()
        for step in range(steps + 1, 2 * steps + 1):
            read(step).block_until_ready()
        out[f"{name}_tokens_per_sec"] = steps * BATCH * BLOCK / (time.perf_counter() - start)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def encode_limit(corpus: str, tokenizer_dir: str, chars: int) -> dict:
    """`tokenizers`' encode_batch alone, on the first `chars` characters of the corpus."""
    from gptjax.data.tokenizers import chunk_at_newlines, load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    texts, total = [], 0
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            total += len(texts[-1])
            if total >= chars:
                break
    pieces = chunk_at_newlines("".join(texts), 1 << 16)
    start = time.perf_counter()
    tokens = sum(len(e.ids) for e in tok.tok.encode_batch(pieces, add_special_tokens=False))
    seconds = time.perf_counter() - start
    return {"mb_per_sec": sum(len(p.encode()) for p in pieces) / seconds / 1e6, "tokens_per_sec": tokens / seconds}


def child(stage: str, args, **overrides) -> dict:
    argv = [sys.executable, "-m", "benchmarks.data", "--stage", stage]
    for key, value in {**vars(args), **overrides}.items():
        if key != "stage" and value is not None:
            argv.append(f"--{key}={value}")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=0.1, help="corpus size for throughput figures")
    parser.add_argument("--rss_gb", default="0.1,1", help="corpus sizes for peak RSS (comma-separated)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--sample_chars", type=int, default=20_000_000, help="data.tokenizer_sample_chars")
    parser.add_argument("--shard_tokens", type=int, default=1 << 24,
                        help="data.shard_tokens; a shard is held whole before it is written, so peak RSS "
                             "compares across sizes only when every size fills shards (16M tokens: 0.1 GB does)")
    parser.add_argument("--read_steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4, help="grain reader threads")
    parser.add_argument("--dir", default=None, help="where corpora and shards go (default: a temp dir)")
    parser.add_argument("--stage", default="", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps({"prepare": stage_prepare, "read": stage_read}[args.stage](args)))
        return

    root = args.dir or tempfile.mkdtemp(prefix="gptjax-data-bench-")
    os.makedirs(root, exist_ok=True)
    sizes = sorted({args.gb, *map(float, filter(None, args.rss_gb.split(",")))})
    print(f"{os.cpu_count()} CPUs; corpora and shards in {root}")
    for gb in sizes:
        corpus, out = os.path.join(root, f"corpus-{gb:g}GB.jsonl"), os.path.join(root, f"prepared-{gb:g}GB")
        if not os.path.exists(corpus):
            start = time.perf_counter()
            written = write_corpus(corpus, gb)
            print(f"{gb:g} GB: generated {written / 1e6:.0f} MB of text in {time.perf_counter() - start:.0f} s")
        prep = child("prepare", args, corpus=corpus, out=out)
        read = child("read", args, corpus=corpus, out=out)
        print(f"{gb:g} GB: peak RSS {prep['peak_rss_mb']:.0f} MB preparing, {read['peak_rss_mb']:.0f} MB reading "
              f"batches")
        if gb != args.gb:
            continue
        limit = encode_limit(corpus, os.path.join(out, "tokenizer"), min(prep["bytes"], 50_000_000))
        print(f"{gb:g} GB: preparation {prep['bytes'] / prep['seconds'] / 1e6:.2f} MB/s of text, "
              f"{prep['tokens'] / prep['seconds'] / 1e6:.2f} M tokens/s (in {prep['seconds']:.1f} s, all passes); "
              f"limit: tokenizers encode_batch alone {limit['mb_per_sec']:.2f} MB/s, "
              f"{limit['tokens_per_sec'] / 1e6:.2f} M tokens/s")
        print(f"{gb:g} GB: input pipeline, {BATCH}x{BLOCK} batches: direct {read['direct_tokens_per_sec'] / 1e6:.1f} "
              f"M tokens/s, grain {read['grain_tokens_per_sec'] / 1e6:.1f} M tokens/s "
              f"(target {TARGET_TOKENS_PER_SEC / 1e6:.0f} M tokens/s per host); first batch "
              f"{read['first_batch_seconds']:.2f} s after opening the directory")


if __name__ == "__main__":
    main()
