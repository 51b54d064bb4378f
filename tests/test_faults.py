"""Faults a run must survive: damaged checkpoints, a full disk, two trainings on one workdir,
preparations killed half-way, and collectives on eight CPU devices."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.data import prepare as prepare_lib
from gptjax.errors import UserError
from gptjax.eval.scoring import evaluate
from gptjax.train import checkpoint_integrity
from gptjax.train.checkpoints import Checkpoints
from gptjax.train.job import run
from gptjax.workdir import load_model
from tests.conftest import tiny, write_corpus
from tests.file_hashes import tree_hashes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def params_of(workdir: str, which: str) -> list[np.ndarray]:
    from flax import nnx

    model, _, _ = load_model(workdir, which)
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, workdir) of a tiny run with checkpoints at steps 5 and 10, never modified."""
    root = tmp_path_factory.mktemp("faults")
    config = tiny(root, write_corpus(root / "corpus"))
    run(config, str(root / "run"))
    return config, str(root / "run")


@pytest.fixture(scope="module")
def step5_params(trained, tmp_path_factory) -> list[np.ndarray]:
    """The parameters of the pristine run's step 5."""
    workdir = str(tmp_path_factory.mktemp("step5") / "run")
    shutil.copytree(trained[1], workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "last", "10"))
    return params_of(workdir, "last")


@pytest.fixture
def copy(trained, tmp_path):
    config, workdir = trained
    target = str(tmp_path / "copy")
    shutil.copytree(workdir, target)
    return config, target


def biggest_array_file(step_dir: str) -> str:
    files = [os.path.join(p, n) for p, _, names in os.walk(os.path.join(step_dir, "state")) for n in names]
    return max(files, key=os.path.getsize)


def flip_bytes(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        chunk = f.read(16)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))


def test_every_step_records_checksums_that_verify(trained):
    _, workdir = trained
    for series, step in (("last", 5), ("last", 10), ("best", 10)):
        step_dir = os.path.join(workdir, "checkpoints", series, str(step))
        assert checkpoint_integrity.has_record(step_dir)
        assert checkpoint_integrity.problem(step_dir) == ""


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "delete_state"])
def test_a_damaged_step_falls_back_to_the_newest_intact_one(copy, step5_params, damage, capsys):
    _, workdir = copy
    step_dir = os.path.join(workdir, "checkpoints", "last", "10")
    target = biggest_array_file(step_dir)
    if damage == "flip":
        flip_bytes(target)
    elif damage == "truncate":
        os.truncate(target, os.path.getsize(target) // 2)
    elif damage == "delete":
        os.remove(target)
    else:
        shutil.rmtree(os.path.join(step_dir, "state"))
    assert Checkpoints(workdir, 2).loop_state().step == 5
    assert "checkpoints/last/10 is damaged" in capsys.readouterr().err
    for got, want in zip(params_of(workdir, "last"), step5_params):  # step 5's exactly, no garbage
        np.testing.assert_array_equal(got, want)


def test_no_intact_step_is_one_line_and_changes_nothing(copy):
    _, workdir = copy
    for series, step in (("last", 5), ("last", 10), ("best", 10)):
        flip_bytes(biggest_array_file(os.path.join(workdir, "checkpoints", series, str(step))))
    before = tree_hashes(workdir)
    with pytest.raises(UserError, match="no intact checkpoint"):
        load_model(workdir, "best")
    assert tree_hashes(workdir) == before


def test_resuming_past_a_damaged_step_sets_it_aside_and_retrains_it_identically(copy, trained, capsys):
    config, workdir = copy
    flip_bytes(biggest_array_file(os.path.join(workdir, "checkpoints", "last", "10")))
    os.remove(os.path.join(workdir, "summary.json"))  # as if the run had been killed after its last save
    run(config, workdir)
    out = capsys.readouterr()
    assert "resuming from step 5" in out.out and "moved the damaged checkpoint of step 10" in out.err
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "damaged", "last-10"))
    for got, want in zip(params_of(workdir, "last"), params_of(trained[1], "last")):
        np.testing.assert_array_equal(got, want)


def test_a_full_disk_while_checkpointing_keeps_the_earlier_steps(copy, monkeypatch, capfd):
    config, workdir = copy
    from gptjax.data.tokenizers import load_tokenizer
    from gptjax.train import mesh as mesh_lib
    from gptjax.train import state as state_lib
    from gptjax.train.optimizer import build_optimizer

    checkpoints = Checkpoints(workdir, 2)
    mesh = mesh_lib.build_mesh(config.mesh)
    vocab = load_tokenizer(os.path.join(workdir, "tokenizer")).vocab_size
    graphdef, params, rest = state_lib.abstract_model(config.model, vocab, config.seed)
    tx = build_optimizer(config.train, params)
    shardings = state_lib.state_shardings(graphdef, params, rest, tx, mesh)
    state, loop = checkpoints.restore(state_lib.restore_target(config.model, vocab, config.seed, tx, shardings))

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_integrity, "seal", no_space)
    loop.step = 15
    checkpoints.save(state, loop)
    with pytest.raises(UserError, match="could not write a checkpoint .*No space left on device.*intact"):
        checkpoints.wait()
    monkeypatch.undo()
    assert "Traceback" not in capfd.readouterr().err  # the one line is the error's only report
    reopened = Checkpoints(workdir, 2)
    assert reopened.last.all_steps() == [5, 10]
    assert reopened.loop_state().step == 10


def test_a_second_training_on_a_workdir_is_refused_and_touches_nothing(copy):
    config, workdir = copy
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               os.path.join(workdir, ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree_hashes(workdir)
        config.train.steps = 20
        with pytest.raises(UserError, match="in use by another training"):
            run(config, workdir)
        assert tree_hashes(workdir) == before
    finally:
        holder.kill()
        holder.wait()


def test_orphaned_preparations_are_removed_but_not_a_running_one(tmp_path):
    old = time.time() - 3600
    orphan, no_lock, running, fresh = (tmp_path / f".tmp-{n}" for n in ("orphan", "nolock", "running", "fresh"))
    for d in (orphan, no_lock, running, fresh):
        d.mkdir()
        (d / "train.bin").write_bytes(b"\0" * 8)
    (orphan / prepare_lib.BUILDING).touch()
    (running / prepare_lib.BUILDING).touch()
    (fresh / prepare_lib.BUILDING).touch()
    for path in (orphan, no_lock, running, orphan / prepare_lib.BUILDING, running / prepare_lib.BUILDING):
        os.utime(path, (old, old))
    with open(running / prepare_lib.BUILDING) as lock:  # another open file: a second process to flock
        fcntl.flock(lock, fcntl.LOCK_EX)
        prepare_lib.remove_orphans(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-fresh", ".tmp-running"]


def test_evaluation_waits_for_each_batch_before_the_next(monkeypatch):
    """Queued multi-device programs deadlocked eight CPU devices; one is in flight at a time."""
    seen = []

    def eval_step(params, rest, batch, weights):
        seen.append(all(r.is_ready() for r in results))
        out = jnp.stack([jnp.sum(jnp.tanh(params @ params)), batch.sum(), weights.sum(), 1.0])
        results.append(out)
        return out

    results: list[jax.Array] = []
    big = jnp.ones((600, 600))
    batch_list = [(jnp.ones(4), jnp.ones(4)) for _ in range(5)]
    out = evaluate(eval_step, big, None, batch_list)
    assert all(seen) and out["tokens"] == 20


def test_eight_cpu_devices_finish_the_full_split_evaluation(tmp_path):
    script = (
        "import sys; from pathlib import Path; from tests.conftest import tiny, write_corpus;"
        "from gptjax.train.job import run; root = Path(sys.argv[1]); c = tiny(root, write_corpus(root / 'corpus'));"
        "c.data.val_fraction = 0.5; c.mesh.data = 8; c.train.batch_size = c.eval.batch_size = 8;"
        "c.train.steps, c.sample.prompts = 5, [];"
        "s = run(c, str(root / 'run')); print('VAL', s['val_loss'])")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "VAL" in proc.stdout
