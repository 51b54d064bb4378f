"""The main job: `python -m gptjax.main --config configs/default.py --workdir runs/x`.

Flags only; everything else happens in `gptjax.train.run(config, workdir)` (or, for a sweep
config, `gptjax.experiments.run_sweep`). Override any config key with
`--config.train.steps=50`; shrink any config for a quick check with
`--config configs/default.py:smoke`. Ctrl-C stops a run (exit 130); the same command resumes it.

example:
    python -m gptjax.main --config configs/default.py:smoke --workdir runs/smoke --config.train.steps=50
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from gptjax.cli import absl_help, guarded, parse_config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (optionally :arg).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the report.")
flags.DEFINE_bool("compile_cache", True, "Keep compiled programs across runs (see gptjax.cli); "
                  "--nocompile_cache or GPTJAX_COMPILE_CACHE=off turns it off.")
flags.mark_flags_as_required(["config", "workdir"])

def newest_checkpoint(workdir: str) -> int | None:
    """The highest step saved under <workdir>/checkpoints/last, read from the directory names."""
    root = os.path.join(workdir, "checkpoints", "last")
    steps = [int(d) for d in os.listdir(root) if d.isdigit()] if os.path.isdir(root) else []
    return max(steps) if steps else None


def interrupted(workdir: str) -> str:
    """Where a Ctrl-C left the run and how to go on."""
    step = newest_checkpoint(workdir)
    again = shlex.join([os.path.basename(sys.executable), "-m", "gptjax.main", *sys.argv[1:]])
    if step is None:
        return f"interrupted before the first checkpoint; nothing to resume in {workdir}: run `{again}` to start"
    return f"interrupted; the newest checkpoint in {workdir} is step {step}: run `{again}` to resume from it"


def parse_flags(argv: list[str]) -> list[str]:
    return parse_config_flags(argv, "check --config and its overrides")


def train(argv: list[str]) -> None:
    del argv
    from gptjax.workdir import check_workdir

    guarded(lambda: check_workdir(FLAGS.workdir), compile_cache=False)
    options = dict(compile_cache=FLAGS.compile_cache, on_interrupt=lambda: interrupted(FLAGS.workdir))
    if FLAGS.config.get("sweep", False):  # a sweep config: every (run, seed) it lists, then a table
        from gptjax.experiments import run_sweep

        guarded(lambda: run_sweep(FLAGS.config, FLAGS.workdir), **options)
        return
    from gptjax.train import run

    overrides = config_flags.get_override_values(FLAGS["config"])  # what train.init_from must not contradict
    guarded(lambda: run(FLAGS.config, FLAGS.workdir, overrides), **options)


def main(argv: list[str] | None = None) -> None:
    absl_help(argv, __doc__, __name__)
    app.run(train, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    main()
