"""Add a finished speedrun workdir to the record log: one line of runs.jsonl, and for a record
its frozen config (records/NN.json) and its log (logs/<name>/).

    python -m experiments.speedrun.runlog --workdir runs/67 --name 67-short-change --entry 67 --base 65
    python -m experiments.speedrun.runlog --workdir runs/67 --name 67-short-change --entry 67 --base 65 --record

A run's line holds its overrides against the frozen config of the record it builds on, so its
command is `--config configs/saved.py:experiments/speedrun/records/<base>.json` plus those
overrides; old lines and old records are never rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from configs.base import get_config as default_config
from gptjax.workdir import overlay

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = os.path.join(HERE, "runs.jsonl")
# Where a run kept its data cache is the machine's business, not the experiment's.
MACHINE_KEYS = ("data.cache_dir",)


def resolved(saved: dict) -> dict:
    """A saved config.json completed with today's defaults, the machine's paths reset."""
    config = default_config()
    overlay(config, saved)
    for key in MACHINE_KEYS:
        section, name = key.split(".")
        config[section][name] = default_config()[section][name]
    return config.to_dict()


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def overrides(config: dict, base: dict) -> dict:
    """Dotted keys whose values differ from `base`, as `--config.KEY=VALUE` would set them."""
    ours, theirs = flatten(config), flatten(base)
    return {key: value for key, value in sorted(ours.items()) if theirs.get(key) != value}


def flag(key: str, value) -> str:
    text = "''" if value == "" else str(value)
    return f"--config.{key}={text}"


def curves(metrics_path: str) -> dict:
    """Validation on the 8 fixed batches, the whole split where scored, and the clock, by step."""
    curve, full, clock = [], [], []
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            if "val_bpc" in row:
                curve.append([row["step"], round(row["val_bpc"], 5)])
                clock.append([row["step"], row["elapsed"]])
            if "val_full_bpc" in row:
                full.append([row["step"], round(row["val_full_bpc"], 5)])
    return dict(curve=curve, val_full=full, clock=clock)


def run_line(workdir: str, name: str, entry: int, base: int, base_config: dict) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        config = resolved(json.load(f))
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    return dict(name=name, entry=entry, seed=config["seed"], base=base,
                overrides=overrides(config, resolved(base_config)), summary=summary,
                **curves(os.path.join(workdir, "metrics.jsonl")))


def record_config(entry: int) -> dict:
    with open(os.path.join(HERE, "records", f"{entry:02d}.json")) as f:
        return json.load(f)


def freeze(workdir: str, name: str, entry: int) -> None:
    """records/NN.json from the run's config.json; logs/<name>/ keeps its metrics and summary."""
    with open(os.path.join(workdir, "config.json")) as f:
        config = resolved(json.load(f))
    path = os.path.join(HERE, "records", f"{entry:02d}.json")
    if os.path.exists(path):
        raise SystemExit(f"error: {path} exists; a record's frozen config is never rewritten")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    logs = os.path.join(HERE, "logs", name)
    os.makedirs(logs, exist_ok=True)
    for file in ("metrics.jsonl", "summary.json"):
        shutil.copy(os.path.join(workdir, file), logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the finished run")
    parser.add_argument("--name", required=True, help="NN-what-changed, plus -seedN or -full")
    parser.add_argument("--entry", type=int, required=True)
    parser.add_argument("--base", type=int, required=True, help="the record whose frozen config it changes")
    parser.add_argument("--record", action="store_true", help="the run sets a record: freeze its config")
    args = parser.parse_args()
    line = run_line(args.workdir, args.name, args.entry, args.base, record_config(args.base))
    if args.record:
        freeze(args.workdir, args.name, args.entry)
    with open(RUNS, "a") as f:
        f.write(json.dumps(line) + "\n")
    print(" ".join(["python -m gptjax.main --config",
                    f"configs/saved.py:experiments/speedrun/records/{args.base:02d}.json",
                    f"--workdir runs/{args.entry}", *(flag(k, v) for k, v in line["overrides"].items())]))


if __name__ == "__main__":
    main()
