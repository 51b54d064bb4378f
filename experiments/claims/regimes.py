"""The regimes the claim experiments share: small models on the plays, char level, 3 seeds.

Every claim file builds its base from one of these and lists its arms; see docs/claims.md
for what each claim measures. Times are for the 2-core CPU the study is sized for.
"""

from ml_collections import ConfigDict

from configs.base import get_config as default_config

SEEDS = [0, 1, 2]


def small(n_layer: int = 2, n_embd: int = 128, block_size: int = 64, steps: int = 500, batch_size: int = 16,
          learning_rate: float = 6e-3, warmup_steps: int = 50) -> ConfigDict:
    """A small GPT: the baselines' shape with a shorter context, evaluated every 10% of training."""
    c = default_config()
    c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = n_layer, 4, n_embd, block_size
    c.train.steps, c.train.batch_size = steps, batch_size
    c.train.learning_rate, c.train.warmup_steps = learning_rate, warmup_steps
    c.train.eval_every, c.train.eval_batches, c.train.log_every = max(steps // 10, 1), 4, max(steps // 20, 1)
    c.train.checkpoint_every = steps
    c.eval.max_tokens = 50_000
    c.sample.prompts = []  # samples do not serve the claims; skipping them saves a compilation
    return c


def overfitting(steps: int = 500) -> ConfigDict:
    """A regime that overfits: 30k training characters seen about 17 times (500 x 16 x 64), no
    weight decay, so validation loss turns up within the run; the regularisers must hold it down.
    (At 100k characters, about 5 passes, the gap opened but validation loss was still falling at
    the end of every run, so a regulariser could only show its cost.)"""
    c = small(steps=steps)
    c.data.train_chars = 30_000
    c.train.weight_decay = 0.0
    return c


def deep(steps: int = 100) -> ConfigDict:
    """A deep, narrow model (12 layers, 64 wide), where per-layer gradient and activation scales
    differ enough to see; per-layer norms are logged at init and through training."""
    c = small(n_layer=12, n_embd=64, steps=steps, batch_size=8, learning_rate=2e-3, warmup_steps=20)
    c.train.log_layer_norms = True
    return c


def sweep(base: ConfigDict, runs: list[dict]) -> ConfigDict:
    return ConfigDict(dict(sweep=True, base=base, seeds=SEEDS, runs=runs))
