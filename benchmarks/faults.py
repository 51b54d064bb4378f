"""Fault injection on one tiny run: kill -9 at random moments, damaged checkpoint files, a full disk.

    python -m benchmarks.faults                 # every damage case, the full disk, 10 kills (two tiny runs a kill)
    python -m benchmarks.faults --kills 12 --seed 1

Prints counts:
* kills: each trial starts the run in a fresh workdir and data cache, kills it with SIGKILL (once
  during data preparation, once during a checkpoint write, the rest at random moments of the
  reference run's duration), reruns the same command to the end and compares the final
  parameters bit for bit with an uninterrupted run's: identical/trials;
* damage: each file of the newest checkpoint step truncated, its bytes flipped or deleted (and
  whole items, the checksum record, every step at once): how many cases fell back to the step
  before, loaded the intact step (the file was one orbax rewrites and never reads back), were
  refused in one line with the workdir unchanged, and how many loaded garbage or crashed (0);
* full disk: a checkpoint write that raises ENOSPC: one line, the earlier steps intact.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n")
OVERRIDES = {"data.source": "files", "data.test_fraction": 0.1, "model.block_size": 16, "train.steps": 20,
             "train.steps_per_call": 2, "train.eval_every": 4, "train.checkpoint_every": 4, "train.log_every": 4,
             "train.keep_checkpoints": 2, "sample.max_new_tokens": 10}


def command(corpus: str, cache: str, workdir: str) -> list[str]:
    flags = [f"--config.{k}={v}" for k, v in {**OVERRIDES, "data.path": corpus, "data.cache_dir": cache}.items()]
    return [sys.executable, "-u", "-m", "gptjax.main", "--config", "configs/base.py:smoke",
            "--workdir", workdir, *flags]


def config(corpus: str, cache: str):
    from configs.base import get_config

    c = get_config("smoke")
    for key, value in {**OVERRIDES, "data.path": corpus, "data.cache_dir": cache}.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def params_of(workdir: str, which: str = "last") -> list[np.ndarray]:
    from flax import nnx

    from gptjax.workdir import load_model

    model, _, _ = load_model(workdir, which)
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


def tree_hashes(root: str) -> dict[str, str]:
    out = {}
    for parent, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(parent, name), "rb") as f:
                out[os.path.relpath(os.path.join(parent, name), root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def run_to_end(cmd: list[str]) -> float:
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"the run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.time() - started


def appeared(directory: str, marker: str) -> bool:
    return os.path.isdir(directory) and any(marker in name for name in os.listdir(directory))


def phase(cache: str, workdir: str, output: str) -> str:
    """What the run was doing when it was killed, from what it left behind."""
    if appeared(cache, ".tmp-"):
        return "data preparation"
    if appeared(os.path.join(workdir, "checkpoints", "last"), ".orbax-checkpoint-tmp") or appeared(
            os.path.join(workdir, "checkpoints", "best"), ".orbax-checkpoint-tmp"):
        return "checkpoint write"
    if "model:" not in output:
        return "start-up"
    return "final evaluation and samples" if "step 20/20" in output else "steps and evaluations"


def kill_trial(cmd: list[str], cache: str, workdir: str, trigger) -> str:
    """Start the run, SIGKILL it when `trigger()` holds, return the phase it was in ("" if it ended first)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while proc.poll() is None and not trigger():
        time.sleep(0.001)
    if proc.poll() is not None:
        proc.stdout.read()
        return ""
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0]
    return phase(cache, workdir, output)


def kills(root: str, corpus: str, reference: str, duration: float, n: int, rng: random.Random) -> None:
    """Kill trials against the uninterrupted run in `reference`, which took `duration` seconds."""
    want = params_of(reference)
    identical, phases = 0, {}
    for i in range(n):
        cache, workdir = os.path.join(root, f"cache-{i}"), os.path.join(root, f"kill-{i}")
        cmd = command(corpus, cache, workdir)
        where, scale = "", 0.95
        for _ in range(3):  # a run that ends before its moment is tried again, from scratch, earlier
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
            if i == 0:
                trigger = lambda: appeared(cache, ".tmp-")  # noqa: E731
            elif i == 1:
                trigger = lambda: appeared(os.path.join(workdir, "checkpoints", "last"), ".orbax-checkpoint-tmp")  # noqa: E731
            else:
                at = time.time() + rng.uniform(0.05, scale) * duration
                trigger = lambda: time.time() >= at  # noqa: E731
            where = kill_trial(cmd, cache, workdir, trigger)
            if where:
                break
            scale /= 2
        where = where or "(finished before the kill)"
        phases[where] = phases.get(where, 0) + 1
        run_to_end(cmd)
        ok = same(params_of(workdir), want)
        identical += ok
        print(f"  kill {i + 1}: during {where}; rerun {'bit-identical' if ok else 'DIFFERS'}", flush=True)
    print(f"kill -9 then rerun: {identical}/{n} final parameters bit-identical to the uninterrupted run "
          f"(reference run {duration:.1f} s; kills by phase: {phases})")


def damage_cases(step_dir: str) -> list[tuple[str, str]]:
    """(relative path, how) for every file of a step and the whole items."""
    cases = []
    for parent, _, files in os.walk(step_dir):
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(parent, name), step_dir)
            cases += [(rel, how) for how in ("truncate", "flip", "delete")]
    return cases + [("state", "delete"), ("meta", "delete")]


def damage(path: str, how: str) -> None:
    if how == "delete":
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    elif how == "truncate":
        os.truncate(path, os.path.getsize(path) // 2)
    else:
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            for i in range(len(data) // 2, min(len(data), len(data) // 2 + 16)):
                data[i] ^= 0xFF
            f.seek(0)
            f.write(data)


def outcome(workdir: str, newest: list[np.ndarray], older: list[np.ndarray]) -> str:
    from gptjax.errors import UserError

    before = tree_hashes(workdir)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            got = params_of(workdir)
    except UserError:
        return "refused" if tree_hashes(workdir) == before else "refused but changed files"
    except Exception as e:  # noqa: BLE001 - counted: the benchmark reports every crash
        return f"crashed ({type(e).__name__})"
    return "fell back" if same(got, older) else "loaded intact" if same(got, newest) else "loaded garbage"


def damages(root: str, reference: str) -> None:
    last = os.path.join(reference, "checkpoints", "last")
    newest, older = sorted(int(s) for s in os.listdir(last) if s.isdigit())[-2:][::-1]
    without_best = os.path.join(root, "older")
    shutil.copytree(reference, without_best)
    shutil.rmtree(os.path.join(without_best, "checkpoints", "best"))
    want_newest = params_of(without_best)
    shutil.rmtree(os.path.join(without_best, "checkpoints", "last", str(newest)))
    want_older = params_of(without_best)
    counts: dict[str, int] = {}
    for rel, how in damage_cases(os.path.join(last, str(newest))):
        workdir = os.path.join(root, "damaged")
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(reference, workdir)
        shutil.rmtree(os.path.join(workdir, "checkpoints", "best"))  # loading `last` must not lean on best
        damage(os.path.join(workdir, "checkpoints", "last", str(newest), rel), how)
        result = outcome(workdir, want_newest, want_older)
        counts[result] = counts.get(result, 0) + 1
        if result not in ("fell back", "loaded intact", "refused"):
            print(f"  {how} {rel}: {result}")
    workdir = os.path.join(root, "damaged")
    shutil.rmtree(workdir)
    shutil.copytree(reference, workdir)
    for series in ("last", "best"):
        for step in os.listdir(os.path.join(workdir, "checkpoints", series)):
            state = os.path.join(workdir, "checkpoints", series, step, "state")
            damage(max((os.path.join(p, n) for p, _, ns in os.walk(state) for n in ns), key=os.path.getsize), "flip")
    every = outcome(workdir, want_newest, want_older)
    total = sum(counts.values())
    bad = total - sum(counts.get(k, 0) for k in ("fell back", "loaded intact", "refused"))
    print(f"damaged checkpoint files: {total} cases: {counts}; garbage or crash {bad}/{total}; "
          f"every step damaged: {every}")


def full_disk(root: str, reference: str, corpus: str) -> None:
    from gptjax.errors import UserError
    from gptjax.train import checkpoint_integrity
    from gptjax.train import Checkpoints
    from gptjax.train import run

    workdir = os.path.join(root, "full-disk")
    shutil.copytree(reference, workdir)
    c = config(corpus, os.path.join(root, "cache-reference"))
    c.train.steps = 28

    def no_space(step_dir: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    before = Checkpoints(workdir, 2).last.all_steps()
    sealing, checkpoint_integrity.seal = checkpoint_integrity.seal, no_space
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run(c, workdir)
        message = "(no error)"
    except UserError as e:
        message = str(e)
    finally:
        checkpoint_integrity.seal = sealing
    after = Checkpoints(workdir, 2)
    intact = after.last.all_steps() == before and all(not after.problem("last", s) for s in before)
    print(f"disk full while checkpointing: earlier steps {before} {'intact' if intact else 'DAMAGED'}; "
          f"{'one line' if chr(10) not in message else 'several lines'}: error: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from gptjax.cli import quiet_logs

    quiet_logs()
    started = time.time()
    with tempfile.TemporaryDirectory() as root:
        corpus = os.path.join(root, "corpus")
        os.makedirs(corpus)
        for i in range(3):
            with open(os.path.join(corpus, f"part{i}.txt"), "w") as f:
                f.write(TEXT * 400 + f"Part {i} ends here.\n")
        reference = os.path.join(root, "reference")
        duration = run_to_end(command(corpus, os.path.join(root, "cache-reference"), reference))
        damages(root, reference)
        full_disk(root, reference, corpus)
        kills(root, corpus, reference, duration, args.kills, random.Random(args.seed))
    print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
