"""Claim (guide 7.3, 9.2): at equal compute, a transformer beats LSTMs and GRUs, which beat n-grams.

    python -m gptjax.main --config experiments/claims/recurrent_vs_transformer.py \
        --workdir runs/claims/recurrent_vs_transformer

Arms: 5-gram / LSTM / GRU / GPT, the networks 3 seeds each.

Regime: equal compute as equal parameters (LSTM 434k, GRU 431k, GPT 406k) and equal training tokens (500 x 16
x 64 chars): a network's training FLOPs are about 6 x parameters x tokens whatever its kind
(attention adds 2-3% at 64 characters of context), so the arms spend the same arithmetic; a
wall-clock budget would also be equal compute but would not reproduce. Widths: GPT 2 x 128,
LSTM 224, GRU 256.
Diagnostic: validation and test bits per char, and wall-clock per run (summary.json), which
shows how differently the same FLOPs run on a CPU (the recurrences are sequential).

Estimated time: 9 runs of about 85 s each plus a 5-gram fit: 13 minutes.

Finding: not supported at this budget. With 0.5M training characters seen (500 x 16 x 64), the
5-gram, which counts all 4.3M, beats every network by 0.27-0.54 bits/char, and among the
networks the order is the reverse of the claim: GRU 2.404, LSTM 2.468, GPT 2.667, every gap far
beyond the seed noise; the recurrent cells learn faster per token at 64 characters of context,
and the GPT was the slowest per run on this CPU too (30 s against 26 s). Which wins depends on
the compute: given more (the main job: 900 steps of 32 x 128 BPE tokens, 4.7 minutes) a GPT
reaches 1.93 bits/char and beats the best char n-gram (2.01).
"""

from experiments.claims.regimes import small, sweep


def get_config():
    recurrent = {"model.n_layer": 1, "model.tie_embeddings": False}
    return sweep(small(steps=500), [
        dict(name="5-gram", kind="ngram", order=5),
        dict(name="lstm", overrides={"model.kind": "lstm", "model.n_embd": 224, **recurrent}),
        dict(name="gru", overrides={"model.kind": "gru", "model.n_embd": 256, **recurrent}),
        dict(name="gpt", overrides={})])
