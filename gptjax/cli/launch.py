"""Run one command as N cooperating JAX processes on this machine (see `gptjax.train.launcher`).

    python -m gptjax.launch --processes 2 --devices_per_process 4 -- \\
        python -m gptjax.main --config configs/default.py:smoke --workdir runs/two_hosts \\
        --config.mesh.data=2 --config.mesh.fsdp=4
"""

from __future__ import annotations

import argparse
import sys

from gptjax.cli import guarded
from gptjax.train import launch


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options before `--`, the command after it."""
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m gptjax.launch", description=__doc__.split("\n\n")[0],
                                     epilog="example:\n" + __doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, required=True, help="number of processes to start")
    parser.add_argument("--devices_per_process", type=int, default=0,
                        help="CPU devices each process sees (0: leave the platform's devices as they are)")
    return parser.parse_args(argv[:split]), argv[split + 1:]


def main(argv: list[str] | None = None) -> None:
    args, command = parse(sys.argv[1:] if argv is None else argv)
    sys.exit(guarded(lambda: launch(command, args.processes, args.devices_per_process)))


if __name__ == "__main__":
    main()
