import pytest

from gptjax.errors import UserError
from gptjax.train.batch_ramp import BatchSchedule, parse
from gptjax.train.job import run


def test_stages_give_each_step_its_rows_and_count_the_tokens_before_it():
    s = BatchSchedule("8:100,16:50", 32)
    assert [s.size(t) for t in (0, 99, 100, 149, 150, 10_000)] == [8, 8, 16, 16, 32, 32]
    assert [s.stage_end(t) for t in (0, 120)] == [100, 150] and s.stage_end(150) == float("inf")
    assert s.rows_before(0) == 0 and s.rows_before(100) == 800
    assert s.rows_before(160) == 800 + 16 * 50 + 32 * 10


def test_no_ramp_is_the_constant_batch():
    s = BatchSchedule("", 32)
    assert s.size(0) == 32 and s.rows_before(7) == 224 and s.stage_end(0) == float("inf")


@pytest.mark.parametrize("ramp", ["8", "8:0", "a:10", "8:10,", "-8:10"])
def test_a_malformed_ramp_is_one_clear_error(ramp):
    with pytest.raises(UserError, match=r"train.batch_ramp=.* is not rows:steps"):
        parse(ramp)


def test_a_ramped_run_trains_on_the_smaller_batches_first(tiny_config, tmp_path):
    tiny_config.train.batch_ramp = "2:3,4:2"  # stage ends off the call boundaries of 5 steps
    summary = run(tiny_config, str(tmp_path / "run"))
    block = tiny_config.model.block_size
    assert summary["steps"] == 10
    assert summary["tokens_seen"] == (2 * 3 + 4 * 2 + tiny_config.train.batch_size * 5) * block


def test_a_ramp_stage_that_does_not_split_over_grad_accum_is_refused(tiny_config, tmp_path):
    tiny_config.train.batch_ramp, tiny_config.train.grad_accum = "3:5", 2
    with pytest.raises(UserError, match="a batch of 3 rows"):
        run(tiny_config, str(tmp_path / "run"))
