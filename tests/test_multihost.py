"""Multi-process runs: joining from config or environment, the local launcher, and a main job
over 2 processes x 4 CPU devices (gloo) that ends where the one-process run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import mesh_worker
from configs.base import get_config
from gptjax.errors import UserError
from gptjax.train import distributed, launcher
from gptjax.train.job import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_process_unless_asked():
    assert distributed.settings({}, {}) is None
    assert distributed.settings(None, {"HOME": "/root"}) is None


def test_config_comes_before_environment():
    env = {"GPTJAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "GPTJAX_NUM_PROCESSES": "4", "GPTJAX_PROCESS_ID": "3"}
    assert distributed.settings({}, env) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                             "process_id": 3}
    config = {"coordinator_address": "host:9", "num_processes": 2, "process_id": 1}
    assert distributed.settings(config, env) == {"coordinator_address": "host:9", "num_processes": 2,
                                                 "process_id": 1}
    assert distributed.settings({}, {"JAX_COORDINATOR_ADDRESS": "h:1"})["coordinator_address"] == "h:1"


def test_auto_detection_leaves_unknowns_to_jax():
    """On TPU pods, SLURM and Open MPI, JAX fills in whatever is None."""
    assert distributed.settings({"initialize": True}, {}) == {"coordinator_address": None, "num_processes": None,
                                                              "process_id": None}


@pytest.mark.parametrize("config, env, message", [
    ({"num_processes": 2, "process_id": 2}, {}, r"process_id=2 must be in 0..1"),
    ({}, {"GPTJAX_NUM_PROCESSES": "two"}, r"GPTJAX_NUM_PROCESSES='two' must be an integer"),
])
def test_bad_process_numbers_are_one_line(config, env, message):
    with pytest.raises(UserError, match=message):
        distributed.settings(config, env)


def test_launcher_environment_replaces_the_device_count():
    env = launcher.process_env({"XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_dump_to=x"}, 1, 3,
                             5555, 4)
    assert env["XLA_FLAGS"].split() == ["--xla_dump_to=x", "--xla_force_host_platform_device_count=4"]
    assert (env["GPTJAX_COORDINATOR_ADDRESS"], env["GPTJAX_NUM_PROCESSES"], env["GPTJAX_PROCESS_ID"]) == (
        "127.0.0.1:5555", "3", "1")
    assert "XLA_FLAGS" not in launcher.process_env({}, 0, 1, 5555, 0)


def test_launcher_prefixes_output_and_reports_the_failure():
    child = "import os, sys; i = int(os.environ['GPTJAX_PROCESS_ID']); print('hello', i); sys.exit(3 if i else 0)"
    proc = subprocess.run([sys.executable, "-m", "gptjax.launch", "--processes", "2", "--", sys.executable, "-c",
                           child], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert sorted(proc.stdout.splitlines()) == ["[0] hello 0", "[1] hello 1"]
    assert "process 1 exited with status 3" in proc.stderr


def test_launcher_refuses_nonsense_before_starting_anything():
    proc = subprocess.run([sys.executable, "-m", "gptjax.launch", "--processes", "0", "--", "true"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --processes=0 must be at least 1"


def test_the_two_checkpoint_series_commit_at_their_own_barriers(tmp_path):
    """`last` and `best` save the same step at once; sharing a commit barrier, the second
    commit fails with 'barrier already ongoing' whenever the first is still waiting."""
    proc = subprocess.run([sys.executable, "-m", "gptjax.launch", "--processes", "2", "--devices_per_process", "1",
                           "--", sys.executable, os.path.join(ROOT, "tests", "barrier_worker.py"), str(tmp_path)],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for index in (0, 1):
        line, = [line for line in proc.stdout.splitlines() if line.startswith(f'[{index}] ["')]
        commits = [key for key in json.loads(line[4:]) if "async_write_complete" in key]
        assert len(commits) == len(set(commits)) == 2, commits


def test_two_processes_of_four_devices_end_where_one_device_ends(tmp_path):
    """dp=2 x fsdp=4 over two processes: each loads its rows, process 0 alone writes logs and
    the profile, and the orbax checkpoints are written and read back by both (the best one
    is restored at the end)."""
    corpus = str(tmp_path / "corpus.txt")
    mesh_worker.write_corpus(corpus)
    overrides = {"train.steps": 5, "train.eval_every": 5, "train.log_every": 5, "train.checkpoint_every": 5,
                 "eval.max_tokens": 2048, "sample.max_new_tokens": 8}
    flags = [f"--config.{k}={v}" for k, v in {**mesh_worker.OVERRIDES, **overrides}.items()]
    two = tmp_path / "two"
    command = [sys.executable, "-m", "gptjax.launch", "--processes", "2", "--devices_per_process", "4", "--",
               sys.executable, "-m", "gptjax.main", "--config", "configs/base.py:smoke", f"--workdir={two}",
               f"--config.data.path={corpus}", f"--config.data.cache_dir={tmp_path / 'cache2'}",
               "--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.train.profile_steps=5", *flags]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    launched = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    out, _ = launched.communicate(timeout=600)
    assert launched.returncode == 0, out[-4000:]
    # The one-process reference trains afterwards: beside the two processes it would starve
    # their checkpoint barriers of CPU on a small machine.
    one = run(mesh_worker.tiny_config(corpus, str(tmp_path / "cache1"), overrides), str(tmp_path / "one"))

    lines = [line for line in out.splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith(("[0] ", "[1] "))] == []
    assert [line for line in lines if " done: " in line][0].startswith("[0] ")
    assert sum(" done: " in line for line in lines) == 1
    with open(two / "environment.json") as f:
        environment = json.load(f)
    assert (environment["process_count"], environment["device_count"]) == (2, 8)

    records = [json.loads(line) for line in open(two / "metrics.jsonl")]
    expected = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    assert [r["step"] for r in records] == [r["step"] for r in expected] == [5]
    for key in ("train_loss", "val_loss"):
        assert records[0][key] == pytest.approx(expected[0][key], abs=1e-5), key
    peak = 8 * mesh_worker.OVERRIDES["train.peak_flops"]
    assert records[0]["mfu"] == pytest.approx(records[0]["model_flops_per_sec"] / peak)
    traces = [f for _, _, files in os.walk(two / "profile") for f in files if f.endswith(".xplane.pb")]
    assert len(traces) == 1  # process 0 only
    with open(two / "summary.json") as f:
        summary = json.load(f)
    for key in ("val_loss", "test_loss", "best_val_loss"):
        assert summary[key] == pytest.approx(one[key], abs=1e-5), key
    assert os.path.isdir(two / "checkpoints" / "last" / "5") and os.path.isdir(two / "checkpoints" / "best" / "5")
    prompts = get_config("smoke").sample.prompts
    assert (two / "samples.txt").read_text(encoding="utf-8").count("=== prompt:") == len(prompts)
