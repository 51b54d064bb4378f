"""Prepare a large corpus once: `python -m gptjax.prepare --config configs/gpt2_124m.py --out DIR`.

Streams the config's data source (data.source=files/tfds/plays) into token shards and a
manifest under DIR (gptjax/data/shard_prepare.py); rerun the same command to finish a
preparation that was stopped. Then train with `--config.data.source=prepared
--config.data.path=DIR`.
"""

from __future__ import annotations

import time

from absl import app, flags
from ml_collections import config_flags

from gptjax.cli import guarded, parse_config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (optionally :arg).", lock_config=True)
flags.DEFINE_string("out", None, "Directory for the token shards, the tokenizer and manifest.json.")
flags.mark_flags_as_required(["config", "out"])


def parse_flags(argv: list[str]) -> list[str]:
    return parse_config_flags(argv, "check --config, --out and overrides")


def prepare_and_report(config, out: str) -> None:
    from gptjax.data.shard_prepare import prepare_shards

    started = time.time()
    manifest = prepare_shards(config.data, config.seed, out, progress=True)
    seconds = time.time() - started
    for name, split in manifest["splits"].items():
        print(f"{name}: {split['tokens']:,} tokens in {len(split['shards'])} shards, {split['chars']:,} characters")
    chars = sum(s["chars"] for s in manifest["splits"].values())
    print(f"prepared {out} in {seconds:.1f} s ({chars / max(seconds, 1e-9) / 1e6:.2f} M chars/s); train with "
          f"--config.data.source=prepared --config.data.path={out}")


def prepare(argv: list[str]) -> None:
    del argv
    guarded(lambda: prepare_and_report(FLAGS.config, FLAGS.out))


def main(argv: list[str] | None = None) -> None:
    app.run(prepare, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    main()
