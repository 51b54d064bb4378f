"""The training loop's parts: loop state, progress, TensorBoard scalars, stops, resumes, skipped updates."""

import glob
import io
import json
import math
import os
import struct

import pytest
from tensorboardX.proto import event_pb2

from gptjax.errors import UserError
from gptjax.train.checkpoints import Checkpoints
from gptjax.train.job import run
from gptjax.train.loop import MetricsLog, count_skips
from gptjax.train.loop_state import LoopState
from gptjax.train.progress import Progress


def records(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def scalars(workdir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from every TensorBoard event file of a workdir, read with tensorboardX's
    protobufs (an event file is a sequence of length-prefixed, checksummed records)."""
    out: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def snapshot(directory) -> dict:
    out = {}
    for d, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(d, f)
            out[p] = (os.path.getsize(p), os.path.getmtime(p))
    return out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_advances_on_a_terminal():
    out = Terminal()
    progress = Progress(total=30, initial=0, every_seconds=1e9, stream=out)
    shown = []
    for step in (10, 20, 30):
        progress.update(step, 10, loss=step / 10, lr=1e-3, tokens_per_sec=5000.0)
        shown.append(out.getvalue().split("\r")[-1])
    progress.close()
    for step, line in zip((10, 20, 30), shown):
        assert f"{step}/30" in line and "step/s" in line and "tok_s=5,000" in line and "lr=1.00e-03" in line
    assert "loss=3.000" in shown[-1] and "<" in shown[1]  # tqdm's elapsed<remaining


def test_a_log_file_gets_a_plain_progress_line_every_interval():
    out = io.StringIO()
    progress = Progress(total=30, initial=0, every_seconds=0.0, stream=out)
    for step in (10, 20, 30):
        progress.update(step, 10, loss=2.5, lr=2e-3, tokens_per_sec=1234.0)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["step 10/30", "step 20/30", "step 30/30"]
    assert "\r" not in out.getvalue() and all("1,234 tokens/s" in line and "ETA" in line for line in lines)
    quiet = io.StringIO()
    progress = Progress(total=30, initial=0, every_seconds=3600.0, stream=quiet)
    progress.update(10, 10, loss=2.5, lr=2e-3, tokens_per_sec=1234.0)
    progress.update(30, 20, loss=2.5, lr=2e-3, tokens_per_sec=1234.0)
    assert quiet.getvalue().splitlines()[0].startswith("step 30/30")  # only the last step within the hour


def test_a_torn_last_metrics_line_is_dropped_and_a_damaged_one_refused(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "train_loss": 2.0}\n{"step": 10, "train_loss": 1.5}\n{"step": 15, "tra')
    MetricsLog(str(tmp_path), resume_step=10).close()
    assert path.read_text() == '{"step": 5, "train_loss": 2.0}\n{"step": 10, "train_loss": 1.5}\n'
    assert "torn last line" in capsys.readouterr().err
    path.write_text('{"step": 5, "tra\n{"step": 10, "train_loss": 1.5}\n')
    with pytest.raises(UserError, match="metrics.jsonl line 1 is not JSON"):
        MetricsLog(str(tmp_path), resume_step=10)
    assert path.read_text() == '{"step": 5, "tra\n{"step": 10, "train_loss": 1.5}\n'


def test_the_loop_state_reads_what_older_versions_saved():
    old = {"step": 40, "tokens_seen": 4096, "wall_seconds": 3.5, "best_val_loss": 1.25, "best_step": 30,
           "evals_since_best": 1, "no_longer_used": 7}
    loop = LoopState.from_json(old)
    assert (loop.step, loop.best_step, loop.skipped_steps, loop.stop_reason) == (40, 30, 0, "")
    assert LoopState.from_json(loop.to_json()) == loop
    assert LoopState(step=40).finished(40) and not LoopState(step=40, stop_reason="completed").finished(50)
    assert LoopState(step=10, stop_reason="early stop: no improvement in 2 evaluations").finished(50)


def test_skips_are_counted_and_the_limit_names_step_and_quantity():
    loop = LoopState(step=10)
    nan, inf = math.nan, math.inf
    finite = [True, False, False, True, False]
    metrics = {"loss": [1.0, nan, 1.0, 1.0, nan], "grad_norm": [1.0, nan, inf, 1.0, nan], "finite": finite}
    assert count_skips(loop, metrics, limit=3) == ""  # the count restarts after a good step
    assert (loop.skipped_steps, loop.skipped_in_a_row) == (3, 1)
    message = count_skips(LoopState(step=10), metrics, limit=2)
    assert message.startswith("training diverged: the gradient norm was not finite at step 8") and "learning_rate" in message


def test_a_stopped_run_stays_stopped_when_rerun(tiny_config, tmp_path, capsys):
    tiny_config.train.stop_below_bpc = 100.0  # any model beats 100 bits per char: stops at the first evaluation
    workdir = str(tmp_path / "run")
    first = run(tiny_config, workdir)
    assert first["steps"] == 5 and first["stop_reason"].startswith("validation reached")
    saved = Checkpoints(workdir, 2).loop_state()
    assert saved.step == 5 and saved.stop_reason == first["stop_reason"]  # the checkpoint knows it stopped
    before = snapshot(workdir)
    capsys.readouterr()
    again = run(tiny_config, workdir)
    assert again == first and snapshot(workdir) == before
    assert "has finished (validation reached" in capsys.readouterr().out


def test_a_resumed_run_keeps_its_clock_drops_a_torn_line_and_writes_scalars(tiny_config, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    tiny_config.train.schedule_steps = 10
    tiny_config.train.steps = 5
    tiny_config.train.progress_every_seconds = 0.0
    first = run(tiny_config, workdir)
    assert "step 5/5: loss" in capsys.readouterr().out  # a plain progress line: the output is not a terminal
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 10, "tokens_seen": 12')  # killed mid-write
    tiny_config.train.steps = 10
    second = run(tiny_config, workdir)
    assert "torn last line" in capsys.readouterr().err
    assert [r["step"] for r in records(workdir)] == [5, 10]
    assert second["wall_seconds"] >= second["train_seconds"] >= first["train_seconds"] > 0

    tags = scalars(workdir)
    for tag in ("train/loss", "train/lr", "train/tokens_per_sec", "train/grad_norm", "val/loss", "val/bits_per_char"):
        assert sorted(tags[tag]) == [5, 10], tag
    by_step = {r["step"]: r for r in records(workdir)}
    assert tags["train/loss"][10] == pytest.approx(by_step[10]["train_loss"])
    assert tags["val/bits_per_char"][5] == pytest.approx(by_step[5]["val_bits_per_char"])


def test_non_finite_updates_are_skipped_and_counted(tiny_config, tmp_path):
    tiny_config.train.learning_rate = 1e30  # every update after the first overflows the parameters
    tiny_config.train.max_nonfinite_steps = 100
    workdir = str(tmp_path / "run")
    summary = run(tiny_config, workdir)
    logged = records(workdir)
    assert summary["skipped_steps"] == sum(r.get("skipped_steps", 0) for r in logged) >= 9
    assert all(math.isfinite(r["val_loss"]) for r in logged) and math.isfinite(summary["test_loss"])


def test_a_run_that_keeps_diverging_stops_with_one_line_and_no_new_checkpoint(tiny_config, tmp_path):
    tiny_config.train.learning_rate = 1e30
    tiny_config.train.max_nonfinite_steps = 3
    workdir = str(tmp_path / "run")
    diverged = r"training diverged: the (loss|parameter norm after the update) was not finite at step \d+"
    with pytest.raises(UserError, match=diverged):
        run(tiny_config, workdir)
    assert Checkpoints(workdir, 2).latest_step() is None
    assert records(workdir)[-1]["skipped_steps"] >= 3
