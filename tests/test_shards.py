"""Prepared token shards: the same tokens, splits and losses as the in-memory cache, a
preparation that resumes after a kill, refusals of changed inputs, rows per process, and
streaming a corpus larger than its memory cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gptjax.data import batches, prepare, shard_writer
from gptjax.data.grain_windows import GrainBatches, batch_iterator
from gptjax.data.shard_prepare import prepare_shards
from gptjax.data.shard_reader import ShardedTokens, load_prepared
from gptjax.data.stream_splits import document_split
from gptjax.errors import UserError
from gptjax.train import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shrink_shards(config, shard_tokens: int = 1000, buffer_chars: int = 2000):
    config.data.shard_tokens, config.data.max_buffer_chars = shard_tokens, buffer_chars
    return config


def prepared_config(config, out) -> object:
    c = config.copy_and_resolve_references()
    c.data.source, c.data.path = "prepared", str(out)
    return c


def same_corpus(a, b) -> None:
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(np.asarray(a.tokens[split]), np.asarray(b.tokens[split]), err_msg=split)
    assert a.chars == b.chars
    assert a.cleaning == b.cleaning
    np.testing.assert_array_equal(a.token_bytes, b.token_bytes)
    np.testing.assert_array_equal(a.token_chars, b.token_chars)


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_prepared_tail_split_is_the_in_memory_corpus(tiny_config, tmp_path, tokenizer):
    """Many shards and encoding batches, one BPE sample that covers the training split."""
    c = shrink_shards(tiny_config)
    c.data.tokenizer, c.data.vocab_size = tokenizer, 300
    memory = prepare.prepare(c.data, c.seed)
    prepare_shards(c.data, c.seed, str(tmp_path / "out"))
    shards = prepare.prepare(prepared_config(c, tmp_path / "out").data, c.seed)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert isinstance(shards.tokens["train"], ShardedTokens) and len(manifest["splits"]["train"]["shards"]) > 3
    same_corpus(memory, shards)
    assert shards.tokenizer.kind == tokenizer
    assert shards.cache_dir == str(tmp_path / "out")


def test_the_same_steps_give_the_same_losses_from_shards_and_from_memory(tiny_config, tmp_path):
    from mesh_worker import Layout

    c = shrink_shards(tiny_config, shard_tokens=700)
    memory = prepare.prepare(c.data, c.seed)
    prepare_shards(c.data, c.seed, str(tmp_path / "out"))
    pc = prepared_config(c, tmp_path / "out")
    shards = prepare.prepare(pc.data, c.seed)
    one = dict(data=1, fsdp=1, tensor=1)
    results = []
    for config, corpus in ((c, memory), (pc, shards)):
        layout = Layout(config, corpus, one, jax.devices()[:1])
        state, losses = layout.train(layout.fresh(), 0)
        val = layout.trainer.full_split(state.params, state.rest, "val")
        results.append((losses, val["loss"], val["bits_per_char"], layout.trainer.validate(state)["loss"]))
    assert results[0] == results[1]


def test_documents_split_places_whole_documents_by_hash(tmp_path):
    """The in-memory `documents` split deals a seeded permutation by character quotas, which a
    stream cannot (stream_splits.py says why); the prepared split hashes each document, and
    each split's tokens are its documents' text, in source order, encoded whole."""
    from configs.base import get_config

    lines = [json.dumps({"text": f"Document {i}: " + " ".join(f"w{(i * j) % 37}" for j in range(30 + i)) + "\n"})
             for i in range(60)]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines + lines[:5]) + "\n", encoding="utf-8")  # 5 duplicates
    c = shrink_shards(get_config())
    c.data.update(source="files", path=str(tmp_path / "docs.jsonl"), split="documents", val_fraction=0.2,
                  test_fraction=0.2, tokenizer="bpe", vocab_size=300)
    prepare_shards(c.data, c.seed, str(tmp_path / "out"))
    corpus = load_prepared(str(tmp_path / "out"))
    texts = [json.loads(line)["text"] for line in lines]
    placed = {s: [t for t in texts if document_split(t, c.seed, 0.2, 0.2) == s] for s in ("train", "val", "test")}
    assert all(placed.values())
    for split, docs in placed.items():
        np.testing.assert_array_equal(np.asarray(corpus.tokens[split]), corpus.tokenizer.encode("".join(docs)))
        assert corpus.chars[split] == sum(map(len, docs))
    assert corpus.cleaning["dedup_documents_removed"] == 5
    assert [document_split(t, 1, 0.2, 0.2) for t in texts] != [document_split(t, 0, 0.2, 0.2) for t in texts]


def test_a_corpus_larger_than_the_memory_cap_streams_through_it(tiny_config, tmp_path, monkeypatch):
    """A 500-character cap on an 18,000-character corpus: no encoding call sees more than
    about twice the cap, and the tokens are those of the whole text encoded at once."""
    c = shrink_shards(tiny_config, shard_tokens=512, buffer_chars=500)
    c.data.tokenizer, c.data.vocab_size, c.data.tokenizer_sample_chars = "bpe", 300, 100_000
    memory = prepare.prepare(c.data, c.seed)
    seen = []
    from gptjax.data.tokenizers import BPETokenizer

    original = BPETokenizer.encode
    monkeypatch.setattr(BPETokenizer, "encode", lambda self, text: seen.append(len(text)) or original(self, text))
    prepare_shards(c.data, c.seed, str(tmp_path / "out"))
    monkeypatch.undo()
    assert sum(memory.chars.values()) > 30 * 500 and len(seen) > 30
    longest_line = max(len(line) for line in open(tmp_path / "corpus" / "part0.txt"))
    assert max(seen) <= 2 * 500 + longest_line
    same_corpus(memory, load_prepared(str(tmp_path / "out")))


def test_a_small_tokenizer_sample_is_a_seeded_part_of_the_training_split(tiny_config, tmp_path):
    c = shrink_shards(tiny_config, buffer_chars=400)
    c.data.tokenizer, c.data.vocab_size, c.data.tokenizer_sample_chars = "bpe", 300, 2000
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        prepare_shards(c.data, seed, str(tmp_path / name))
        outs.append((tmp_path / name / "tokenizer" / "tokenizer.json").read_text())
    assert outs[0] == outs[1] != outs[2]
    corpus = load_prepared(str(tmp_path / "a"))  # lossless whatever the sample
    text = open(tmp_path / "corpus" / "part0.txt").read()
    assert corpus.tokenizer.decode(corpus.tokenizer.encode(text)) == text


def directory_bytes(path) -> dict:
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path)) if (path / name).is_file()}


def test_preparation_resumes_after_a_kill_with_the_same_bytes(tiny_config, tmp_path, monkeypatch):
    c = shrink_shards(tiny_config, shard_tokens=600, buffer_chars=500)
    prepare_shards(c.data, c.seed, str(tmp_path / "whole"))

    original = shard_writer.ShardWriter.write
    written = []

    def killed_after_five(self, ids):
        original(self, ids)
        written.append(self.state["shards"][-1]["file"])
        if len(written) == 5:  # the 5th shard is on disk but not yet in the manifest
            raise KeyboardInterrupt

    monkeypatch.setattr(shard_writer.ShardWriter, "write", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(c.data, c.seed, str(tmp_path / "resumed"))
    monkeypatch.undo()
    manifest = json.load(open(tmp_path / "resumed" / "manifest.json"))
    assert not manifest["complete"] and len(manifest["splits"]["train"]["shards"]) == 4
    (tmp_path / "resumed" / ".train-00005.bin.tmp").write_bytes(b"torn")  # a shard cut off mid-write
    with pytest.raises(UserError, match="only partly prepared"):
        load_prepared(str(tmp_path / "resumed"))

    from gptjax.data.tokenizers import CharTokenizer

    encoded = []
    encode = CharTokenizer.encode
    monkeypatch.setattr(CharTokenizer, "encode", lambda self, text: encoded.append(len(text)) or encode(self, text))
    prepare_shards(c.data, c.seed, str(tmp_path / "resumed"))
    monkeypatch.undo()
    total = sum(split["chars"] for split in json.load(open(tmp_path / "whole" / "manifest.json"))["splits"].values())
    assert 0 < sum(encoded) < total - 4 * 600 + 1000  # the four recorded shards are not encoded again
    whole, resumed = directory_bytes(tmp_path / "whole"), directory_bytes(tmp_path / "resumed")
    assert sorted(whole) == sorted(resumed)
    for name in whole:
        if name != "manifest.json":
            assert whole[name] == resumed[name], name
    strip = lambda m: {k: v for k, v in json.loads(m).items() if k not in ("sources", "settings")}  # noqa: E731
    assert strip(whole["manifest.json"]) == strip(resumed["manifest.json"])
    same_corpus(load_prepared(str(tmp_path / "whole")), load_prepared(str(tmp_path / "resumed")))


def test_changed_settings_or_sources_are_refused_in_one_line(tiny_config, tmp_path):
    c = shrink_shards(tiny_config)
    out = str(tmp_path / "out")
    prepare_shards(c.data, c.seed, out)
    before = directory_bytes(tmp_path / "out")
    prepare_shards(c.data, c.seed, out)  # the same settings: nothing to do
    c.data.val_fraction = 0.2
    with pytest.raises(UserError, match=r"prepared with data.val_fraction=0.1, but the config says 0.2"):
        prepare_shards(c.data, c.seed, out)
    c.data.val_fraction = 0.1
    with pytest.raises(UserError, match=r"prepared with data.seed=0, but the config says 3"):
        prepare_shards(c.data, 3, out)
    (tmp_path / "corpus" / "part3.txt").write_text("new\n")
    with pytest.raises(UserError, match=r"part3.txt is new since .* was prepared"):
        prepare_shards(c.data, c.seed, out)
    os.remove(tmp_path / "corpus" / "part3.txt")
    with open(tmp_path / "corpus" / "part1.txt", "a") as f:
        f.write("One more line.\n")
    with pytest.raises(UserError, match=r"part1.txt has changed .* since .* was prepared"):
        prepare_shards(c.data, c.seed, out)
    os.remove(tmp_path / "corpus" / "part1.txt")
    with pytest.raises(UserError, match=r"part1.txt is gone"):
        prepare_shards(c.data, c.seed, out)
    assert directory_bytes(tmp_path / "out") == before  # nothing was touched
    c.data.vocab_size, c.data.tokenizer = 100, "bpe"
    with pytest.raises(UserError, match="data.vocab_size=100 is too small"):
        prepare_shards(c.data, c.seed, str(tmp_path / "first"))
    c.data.vocab_size = 300  # a first attempt that stopped before any output counts for nothing
    assert prepare_shards(c.data, c.seed, str(tmp_path / "first"))["complete"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no manifest.json"):
        prepare_shards(c.data, c.seed, str(tmp_path / "other"))
    with pytest.raises(UserError, match="holds no manifest.json; prepare it first"):
        load_prepared(str(tmp_path / "corpus"))


def test_the_command_prepares_and_refuses_in_one_line(tiny_config, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "gptjax.prepare", "--config", "configs/base.py", f"--out={out}",
               "--config.data.source=files", f"--config.data.path={tiny_config.data.path}"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train with --config.data.source=prepared" in proc.stdout
    proc = subprocess.run(command + ["--config.data.tokenizer=bpe"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {out} was prepared with data.tokenizer='char', but the config says 'bpe'; use a new --out "
        "directory (or delete this one)"]


def test_sharded_tokens_slice_across_shards_like_one_array(tmp_path):
    rng = np.random.default_rng(0)
    counts = [5, 1, 7, 3]
    parts = [rng.integers(0, 60000, n).astype(np.uint16) for n in counts]
    paths = []
    for i, part in enumerate(parts):
        paths.append(str(tmp_path / f"s{i}.bin"))
        part.tofile(paths[-1])
    tokens, whole = ShardedTokens(paths, counts, "uint16"), np.concatenate(parts)
    assert len(tokens) == tokens.size == 16 and tokens.shape == (16,)
    for a in range(17):
        for b in range(a, 18):
            np.testing.assert_array_equal(tokens[a:b], whole[a:b])
    assert tokens[12] == whole[12] and tokens[-1] == whole[-1]
    np.testing.assert_array_equal(tokens[1:15:3], whole[1:15:3])
    np.testing.assert_array_equal(np.asarray(tokens), whole)


def test_grain_gives_the_direct_batches_and_resumes_anywhere(tiny_config, tmp_path):
    c = shrink_shards(tiny_config, shard_tokens=500)
    prepare_shards(c.data, c.seed, str(tmp_path / "out"))
    tokens = load_prepared(str(tmp_path / "out")).tokens["train"]
    mesh = mesh_lib.build_mesh(dict(data=1, fsdp=1, tensor=1, preset=""), jax.devices()[:1])
    sharding = mesh_lib.batch_sharding(mesh, leading=2)
    size_of = lambda step: 8 if step < 6 else 16  # noqa: E731  (a batch ramp)
    loader = GrainBatches(tokens, 7, last_step=12, accum=2, batch_size_of=size_of, block_size=16, threads=2,
                          prefetch=3)
    for step, n in ((0, 3), (3, 3), (6, 4), (10, 2), (4, 2), (11, 1)):  # in order, then a resume and a jump
        direct = batches.train_batch(tokens, 7, step, n, 2, size_of(step), 16, sharding)
        np.testing.assert_array_equal(np.asarray(loader.train_batch(step, n, sharding)), np.asarray(direct))


def test_processes_read_disjoint_rows_that_make_the_one_process_batch(tiny_config, tmp_path):
    c = shrink_shards(tiny_config, shard_tokens=500)
    prepare_shards(c.data, c.seed, str(tmp_path / "out"))
    tokens = load_prepared(str(tmp_path / "out")).tokens["train"]
    size_of = lambda step: 16  # noqa: E731

    def rows(index: int, count: int) -> list[np.ndarray]:
        return list(batch_iterator(tokens, 3, 5, 9, 2, size_of, 16, threads=2,
                                   rows_of=lambda m: batches.process_rows(m, index, count)))

    one = rows(0, 1)
    halves = [rows(i, 2) for i in range(2)]
    quarters = [rows(i, 4) for i in range(4)]
    for step in range(4):
        assert one[step].shape == (2, 8, 17) and halves[0][step].shape == (2, 4, 17)
        np.testing.assert_array_equal(np.concatenate([h[step] for h in halves], axis=1), one[step])
        np.testing.assert_array_equal(np.concatenate([q[step] for q in quarters], axis=1), one[step])
        offsets = [batches.step_offsets(3, 5 + step, len(tokens), 16, 2, 16, batches.process_rows(8, i, 2))
                   for i in range(2)]
        assert offsets[0].shape == offsets[1].shape == (2, 4)


def test_two_processes_of_four_devices_read_their_own_rows_of_the_batch(tiny_config, tmp_path):
    """Each process reads half the rows; gathered, both loaders give the one-process batch."""
    import shard_worker

    c = shrink_shards(tiny_config, shard_tokens=500)
    out = str(tmp_path / "out")
    prepare_shards(c.data, c.seed, out)
    command = [sys.executable, "-m", "gptjax.launch", "--processes", "2", "--devices_per_process", "4", "--",
               sys.executable, os.path.join(ROOT, "tests", "shard_worker.py"), out]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line[4:].startswith("{"):
            result = json.loads(line[4:])
            results[result["process"]] = result
    assert sorted(results) == [0, 1] and all(r["devices"] == 8 and r["direct"] and r["grain"] for r in results.values())
    tokens = load_prepared(out).tokens["train"]
    w = shard_worker
    for step in range(w.STEPS):
        alone = batches.step_offsets(w.SEED, step, len(tokens), w.BLOCK, w.ACCUM, w.BATCH, slice(None))
        halves = [np.array(results[i]["offsets"][step]) for i in (0, 1)]
        assert halves[0].shape == (w.ACCUM, w.BATCH // w.ACCUM // 2)
        np.testing.assert_array_equal(np.concatenate(halves, axis=1), alone)


def test_the_loader_key_picks_the_reader(tiny_config, tmp_path):
    from gptjax.data.grain_windows import configured_batches

    tokens = np.arange(100)
    assert configured_batches(tiny_config, tokens, lambda step: 8) is None
    tiny_config.data.loader = "grain"
    assert isinstance(configured_batches(tiny_config, tokens, lambda step: 8), GrainBatches)
    tiny_config.data.loader = "torch"
    with pytest.raises(UserError, match="data.loader='torch' is unknown"):
        configured_batches(tiny_config, tokens, lambda step: 8)
