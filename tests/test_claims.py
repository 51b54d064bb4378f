"""Every claim experiment is a valid sweep, and two train steps of each of its arms run."""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from configs.base import get_config as default_config
from gptjax.data.batches import window_offsets, windows
from gptjax.data.prepare import prepare
from gptjax.experiments import parse_runs, run_config
from gptjax.train import state as state_lib
from gptjax.train.optimizer import build_optimizer
from gptjax.train.model_steps import train_step
from gptjax.train.config_checks import CHOICES, check_config
from tests.conftest import TEXT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLAIMS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "claims", "*.py"))
                if "def get_config" in open(p, encoding="utf-8").read())

DEFAULT = default_config()


def load(path: str) -> ConfigDict:
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def flat(config: ConfigDict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, ConfigDict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def wired(dotted: str, value) -> bool:
    """Whether the training job knows the key and, for a choice, accepts the value."""
    known = flat(DEFAULT)
    return dotted in known and (dotted not in CHOICES or value in CHOICES[dotted])


def test_there_is_a_claim_per_row_of_the_study():
    names = {os.path.basename(p)[:-3] for p in CLAIMS}
    assert names == {"batch_norm", "dropout", "regularisation", "augmentation", "data_size", "grad_clip",
                     "activations", "initialisation", "lr_decay", "recurrent_vs_transformer",
                     "encoder_decoder", "fine_tuning"}


@pytest.mark.parametrize("path", CLAIMS, ids=lambda p: os.path.basename(p)[:-3])
def test_claim_is_a_sweep_of_three_seeds_with_a_documented_time(path):
    sweep = load(path)
    runs = parse_runs(sweep)
    assert sweep.sweep and list(sweep.seeds) == [0, 1, 2] and len(runs) >= 2
    for run in runs:  # every override is a key of the base, so run_config cannot refuse it
        run_config(sweep.base, 0, run.overrides)
    doc = open(path, encoding="utf-8").read()
    assert "Claim (guide" in doc and "Regime" in doc and "Diagnostic" in doc and "Estimated time" in doc
    minutes = int(doc.split("Estimated time")[1].split("minutes")[0].split()[-1])
    assert minutes <= 20


def test_total_time_fits_three_hours():
    total = sum(int(open(p, encoding="utf-8").read().split("Estimated time")[1].split("minutes")[0].split()[-1])
                for p in CLAIMS)
    assert total <= 180


def test_every_switch_a_claim_sets_is_one_the_training_job_has():
    """Every key of a claim's base and overrides is a key of the default config, and every value
    of a choice is one the training job accepts: no arm waits on a switch that is not wired."""
    for path in CLAIMS:
        sweep = load(path)
        for settings in [flat(sweep.base)] + [dict(dict(spec).get("overrides", {})) for spec in sweep.runs]:
            unwired = {k: v for k, v in settings.items() if not wired(k, v)}
            assert not unwired, f"{os.path.basename(path)}: {unwired}"


# the network arms: an n-gram arm has no train step (tests/test_experiments.py runs one)
ARMS = [(path, run) for path in CLAIMS for run in parse_runs(load(path)) if not run.ngram_order]
ARM_IDS = [f"{os.path.basename(p)[:-3]}:{r.name}" for p, r in ARMS]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    return str(root / "text.txt"), str(root / "cache")


def two_steps(path: str, run, tiny_data):
    """The arm's config shrunk onto the tiny corpus: (train step, train state, 2 steps of batches)."""
    sweep = load(path)
    config = run_config(sweep.base, 0, run.overrides)
    config.data.source, config.data.path = "files", tiny_data[0]
    config.data.cache_dir, config.data.test_fraction = tiny_data[1], 0.1
    m = config.model
    m.n_layer, m.n_head, m.n_embd, m.block_size = min(m.n_layer, 2), 2, 16, 16
    config.train.batch_size, config.train.grad_accum = 4, 1
    config.data.src_len = min(config.data.src_len, 8)
    config.eval.score_from = min(config.eval.score_from, config.data.src_len - 1)
    check_config(config)
    corpus = prepare(config.data, config.seed)
    vocab = corpus.tokenizer.vocab_size
    graphdef, abstract_params, _ = state_lib.abstract_model(config.model, vocab, config.seed)
    tx = build_optimizer(config.train, abstract_params)
    tokens = corpus.tokens["train"]
    batches = np.stack([windows(tokens, window_offsets(config.seed, s, len(tokens), 16, 4), 16)[None]
                        for s in range(2)])
    init = lambda: state_lib.fresh_state(config.model, vocab, config.seed, tx)  # noqa: E731
    return train_step(config, graphdef, tx, vocab), init, jnp.asarray(batches)


@pytest.mark.parametrize("path,run", ARMS, ids=ARM_IDS)
def test_two_steps_of_each_arm_trace(path, run, tiny_data):
    """Every arm's two train steps, traced abstractly: the whole step is built (model, switches,
    loss, optimizer, schedule) without XLA compiling it, which takes 5-10 s an arm on this CPU."""
    step, init, batches = two_steps(path, run, tiny_data)
    state, metrics = jax.eval_shape(step, jax.eval_shape(init), batches)
    assert metrics["loss"].shape == (2,) and state.step.shape == ()


FIRST_ARMS = [next(a for a in ARMS if a[0] == path) for path in CLAIMS if any(a[0] == path for a in ARMS)]


@pytest.mark.parametrize("path,run", FIRST_ARMS, ids=[f"{os.path.basename(p)[:-3]}:{r.name}" for p, r in FIRST_ARMS])
def test_two_steps_of_a_claim_run(path, run, tiny_data):
    """One arm per claim compiled and run for two steps (with XLA's cheap optimisation level):
    finite losses and the step counter advanced."""
    step, init, batches = two_steps(path, run, tiny_data)
    state = init()
    compiled = jax.jit(step).lower(state, batches).compile(
        compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    state, metrics = compiled(state, batches)
    assert int(state.step) == 2 and np.isfinite(np.asarray(metrics["loss"])).all()
