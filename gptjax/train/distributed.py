"""Joining a multi-process run before JAX starts its backend.

Every process of a run calls `initialize(config)` first; afterwards `jax.devices()` lists
the devices of all processes and one mesh spans them. What to join comes from
`config.distributed`, else from GPTJAX_COORDINATOR_ADDRESS / GPTJAX_NUM_PROCESSES /
GPTJAX_PROCESS_ID (set by `gptjax.launch`) or JAX_COORDINATOR_ADDRESS. With
`distributed.initialize=True` and nothing else set, JAX detects TPU VM pods, SLURM and
Open MPI itself.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax

from gptjax.errors import UserError

ENV = {"coordinator_address": "GPTJAX_COORDINATOR_ADDRESS", "num_processes": "GPTJAX_NUM_PROCESSES",
       "process_id": "GPTJAX_PROCESS_ID"}


def env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} must be an integer") from None


def settings(dist_config, environ: Mapping[str, str] = os.environ) -> dict | None:
    """Arguments for `jax.distributed.initialize`, or None when this is a one-process run.

    Values left None are for JAX to detect (TPU pods, SLURM, Open MPI).
    """
    dc = dist_config if dist_config is not None else {}
    address = (dc.get("coordinator_address") or environ.get(ENV["coordinator_address"], "").strip()
               or environ.get("JAX_COORDINATOR_ADDRESS", "").strip() or None)
    count = dc.get("num_processes") or 0
    count = count if count > 0 else env_int(environ, ENV["num_processes"])
    index = dc.get("process_id", -1)
    index = index if index is not None and index >= 0 else env_int(environ, ENV["process_id"])
    if not (dc.get("initialize") or address or count is not None or index is not None):
        return None
    if count is not None and count < 1:
        raise UserError(f"num_processes={count} must be at least 1 (distributed.num_processes or "
                        "GPTJAX_NUM_PROCESSES)")
    if count is not None and index is not None and not 0 <= index < count:
        raise UserError(f"process_id={index} must be in 0..{count - 1} for {count} processes "
                        "(distributed.process_id or GPTJAX_PROCESS_ID)")
    return {"coordinator_address": address, "num_processes": count, "process_id": index}


def initialize(config) -> bool:
    """Join the run that `config` or the environment describes; False when there is none to join."""
    args = settings(config.get("distributed"))
    if args is None:
        return False
    if jax.distributed.is_initialized():
        return True
    # Processes on CPU exchange collectives over gloo (TCP); accelerators use their own links.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**args)
    except ValueError as e:
        raise UserError(f"cannot start the multi-process run ({e}); set distributed.coordinator_address, "
                        "num_processes and process_id (or GPTJAX_*), except on TPU pods / SLURM / Open MPI")
    return True
