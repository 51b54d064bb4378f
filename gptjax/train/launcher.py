"""Run one command as N cooperating JAX processes on this machine.

    python -m gptjax.launch --processes 2 --devices_per_process 4 -- \\
        python -m gptjax.main --config configs/default.py:smoke --workdir runs/two_hosts \\
        --config.mesh.data=2 --config.mesh.fsdp=4

Each process gets GPTJAX_COORDINATOR_ADDRESS (127.0.0.1 and a free port),
GPTJAX_NUM_PROCESSES and GPTJAX_PROCESS_ID, which `gptjax.train.distributed` reads; with
--devices_per_process K it also sees K CPU devices and collectives go over gloo. This is
how the multi-host code paths (per-process batch rows, collective checkpoints, process-0
logs) are exercised without a cluster. Output lines are prefixed with `[i]`; the exit
status is the first non-zero one, and when one process fails the others are stopped,
since they would otherwise wait on it forever.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from gptjax.errors import UserError

GRACE_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(base: dict[str, str], index: int, count: int, port: int, devices: int) -> dict[str, str]:
    """The environment of process `index`: where to meet the others, and its CPU devices."""
    env = dict(base, GPTJAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", GPTJAX_NUM_PROCESSES=str(count),
               GPTJAX_PROCESS_ID=str(index), PYTHONUNBUFFERED="1", TQDM_MININTERVAL="5")
    if devices:
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).split()
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
        env["JAX_PLATFORMS"] = "cpu"  # forced host devices exist only on the CPU backend
        env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
    return env


def relay(prefix: str, stream, lock: threading.Lock) -> None:
    """Copy a child's output line by line (tqdm's carriage returns count as line ends)."""
    for line in stream:
        with lock:
            sys.stdout.write(f"{prefix} {line.rstrip()}\n")
            sys.stdout.flush()


def launch(command: list[str], processes: int, devices_per_process: int = 0) -> int:
    """Start `processes` copies of `command`, wait for all; the first non-zero exit status, else 0."""
    if processes < 1:
        raise UserError(f"--processes={processes} must be at least 1")
    if devices_per_process < 0:
        raise UserError(f"--devices_per_process={devices_per_process} must be 0 (leave as is) or more")
    if not command:
        raise UserError("no command to run: put it after `--`, e.g. -- python -m gptjax.main ...")
    port, lock = free_port(), threading.Lock()
    signal.signal(signal.SIGTERM, interrupted)  # a killed launcher takes its processes with it
    children, relays = [], []
    for i in range(processes):
        child = subprocess.Popen(command, env=process_env(dict(os.environ), i, processes, port, devices_per_process),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        thread = threading.Thread(target=relay, args=(f"[{i}]", child.stdout, lock), daemon=True)
        thread.start()
        children.append(child)
        relays.append(thread)
    try:
        status = wait_all(children)
    except KeyboardInterrupt:
        stop(children)
        status = 130
    for thread in relays:
        thread.join(timeout=GRACE_SECONDS)
    return status


def interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def wait_all(children: list[subprocess.Popen]) -> int:
    """Wait for every child; after the first failure, give the rest a grace period, then stop them."""
    first: tuple[int, int] | None = None
    failed_at = 0.0
    while any(c.poll() is None for c in children):
        if first is None:
            first = next(((i, c.returncode) for i, c in enumerate(children) if c.returncode not in (None, 0)), None)
            failed_at = time.monotonic()
        elif time.monotonic() - failed_at > GRACE_SECONDS:
            stop(children)
        time.sleep(0.1)
    if first is None:
        first = next(((i, c.returncode) for i, c in enumerate(children) if c.returncode != 0), None)
    if first is None:
        return 0
    index, code = first
    print(f"[launch] process {index} exited with status {code}", file=sys.stderr)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it


def stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
