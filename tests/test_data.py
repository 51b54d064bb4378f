import json

import numpy as np
import pytest
from ml_collections import ConfigDict

from configs.base import get_config
from gptjax.data import batches, cleaning, prepare, sources, splits
from gptjax.data.sources import Document
from gptjax.errors import UserError
from gptjax.train import mesh as mesh_lib

DOCS = [Document(f"d{i}", f"document {i} " * (10 + i)) for i in range(10)]


def test_tail_split_is_contiguous_with_validation_last():
    text = "".join(d.text for d in DOCS)
    parts = splits.split_text(DOCS, "tail", 0.1, 0.05, seed=0)
    assert parts["train"] + parts["test"] + parts["val"] == text
    assert len(parts["val"]) == int(len(text) * 0.1) and len(parts["test"]) == int(len(text) * 0.05)


def test_document_split_is_deterministic_and_disjoint():
    a = splits.split_text(DOCS, "documents", 0.2, 0.2, seed=1)
    assert a == splits.split_text(DOCS, "documents", 0.2, 0.2, seed=1)
    assert a != splits.split_text(DOCS, "documents", 0.2, 0.2, seed=2)
    for d in DOCS:  # every document lands whole in exactly one split
        assert sum(d.text in part for part in a.values()) == 1
    assert all(a[s] for s in ("train", "val", "test"))


def test_bad_fractions_are_refused():
    with pytest.raises(UserError, match="val_fraction"):
        splits.split_text(DOCS, "tail", 0.0, 0.1, seed=0)


def test_cleaning_steps_report_counts():
    cfg = ConfigDict(dict(nfc=True, control_chars=True, whitespace=True, dedup_documents=True,
                          dedup_lines=False, min_chars=5))
    docs = [Document("a", "cafe\u0301\x07 line   \n\n\n\nnext\r\n"), Document("b", "cafe\u0301\x07 line   \n\n\n\nnext\r\n"),
            Document("c", "tiny")]
    out, stats = cleaning.clean(docs, cfg)
    assert [d.text for d in out] == ["café line\n\nnext\n"]
    assert stats["nfc_chars_removed"] == 2 and stats["control_chars_chars_removed"] == 4
    assert stats["dedup_documents_removed"] == 1 and stats["min_chars_documents_removed"] == 1


def test_whitespace_cleaning_keeps_markdown_hard_breaks_only():
    cfg = ConfigDict(dict(nfc=False, control_chars=False, whitespace=True, dedup_documents=False,
                          dedup_lines=False, min_chars=1))
    text = "**ROMEO**  \nverse one   \nverse two \n  \t\nend\t\n"
    out, _ = cleaning.clean([Document("play.md", text), Document("notes.txt", text)], cfg)
    assert out[0].text == "**ROMEO**  \nverse one  \nverse two\n\nend\n"
    assert out[1].text == "**ROMEO**\nverse one\nverse two\n\nend\n"


def test_plays_are_38_and_markdown_can_be_stripped():
    plays = list(sources.plays(markdown=True))
    assert len(plays) == 38 and sum(len(p.text) for p in plays) > 5_000_000
    plain = sources.play_to_plain_text(plays[0].text)
    assert "**" not in plain and "\n## " not in plain and "THESEUS:\nNow, fair Hippolyta" in plain


def test_files_source_reads_directories_globs_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("beta", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "gamma"}) + "\n\n" + json.dumps({"body": "delta"}) + "\n")
    (tmp_path / "ignored.bin").write_bytes(b"\x00")
    assert [d.text for d in sources.files(str(tmp_path), "body")] == ["alpha", "gamma", "delta", "beta"]
    assert [d.text for d in sources.files(str(tmp_path / "*.txt"))] == ["alpha"]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "matches no"),
    (lambda p: (p / "bad.txt").write_bytes(b"ok \xff\xfe not utf-8"), "bad.txt is not UTF-8"),
    (lambda p: (p / "x.jsonl").write_text('{"text": 1}\n'), "x.jsonl:1 has no string field"),
])
def test_files_source_errors_name_the_problem(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(UserError, match=message):
        list(sources.files(str(tmp_path / "*")))


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    c = get_config().data
    c.source, c.path = "files", str(tmp_path)
    with pytest.raises(UserError, match="empty"):
        sources.load_documents(c)


def test_tfds_source_reads_array_record_without_tensorflow(tmp_path):
    import tensorflow_datasets as tfds

    class TinyText(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, text in enumerate(["hello world", "你好 🙂"]):
                yield i, {"text": text}

    TinyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    docs = list(sources.tfds_documents("tiny_text", "train", str(tmp_path), "text"))
    assert sorted(d.text for d in docs) == ["hello world", "你好 🙂"]
    with pytest.raises(UserError, match="not found"):
        list(sources.tfds_documents("no_such_dataset", "train", str(tmp_path), "text"))


def test_token_cache_is_reused(tiny_config, monkeypatch):
    first = prepare.prepare(tiny_config.data, tiny_config.seed)
    monkeypatch.setattr(prepare, "build_cache", lambda *a: pytest.fail("cache was rebuilt"))
    again = prepare.prepare(tiny_config.data, tiny_config.seed)
    assert again.cache_dir == first.cache_dir
    assert all(np.array_equal(first.tokens[s], again.tokens[s]) for s in ("train", "val", "test"))
    text = "".join(d.text for d in sources.load_documents(tiny_config.data))
    assert sum(first.chars.values()) == len(cleaning.clean([Document("x", text)], tiny_config.data.clean)[0][0].text)


def test_batches_are_a_function_of_seed_and_step():
    tokens = np.arange(1000, dtype=np.uint16)
    sharding = mesh_lib.batch_sharding(mesh_lib.build_mesh(get_config().mesh), leading=2)
    a = batches.train_batch(tokens, 0, 5, 2, 1, 4, 8, sharding)
    b = batches.train_batch(tokens, 0, 5, 2, 1, 4, 8, sharding)
    c = batches.train_batch(tokens, 1, 5, 2, 1, 4, 8, sharding)
    assert a.shape == (2, 1, 4, 9) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(np.diff(np.asarray(a), axis=-1), np.ones((2, 1, 4, 8)))  # contiguous windows
    resumed = batches.train_batch(tokens, 0, 6, 1, 1, 4, 8, sharding)
    assert np.array_equal(resumed[0], a[1])


def test_sequential_batches_score_every_target_once():
    tokens = np.arange(103, dtype=np.uint16)
    sharding = mesh_lib.batch_sharding(mesh_lib.build_mesh(get_config().mesh))
    targets = []
    for batch, weights in batches.sequential_batches(tokens, 10, 4, 0, sharding):
        batch, weights = np.asarray(batch), np.asarray(weights)
        targets += list(batch[:, 1:][weights > 0])
    assert sorted(targets) == list(range(1, 103))


def test_score_from_scores_the_targets_an_encoder_decoder_predicts():
    """With eval.score_from = src_len - 1 a GPT is scored on exactly the target tokens of the
    encoder-decoder's lm_split of the same windows: window positions >= src_len - 1."""
    from gptjax.data.pairs import lm_split

    tokens = np.arange(103, dtype=np.uint16)
    sharding = mesh_lib.batch_sharding(mesh_lib.build_mesh(get_config().mesh))
    src_len, gpt, encdec = 4, [], []
    for (b0, w0), (b, w) in zip(batches.sequential_batches(tokens, 10, 4, 0, sharding),
                                batches.sequential_batches(tokens, 10, 4, 0, sharding, score_from=src_len - 1)):
        b, w, w0 = np.asarray(b), np.asarray(w), np.asarray(w0)
        gpt += list(b[:, 1:][w > 0])
        pairs = lm_split(b, src_len)
        encdec += list(pairs.tgt_out[(pairs.tgt_weights * w0[:, src_len - 1:]) > 0])
    assert sorted(gpt) == sorted(encdec) and 0 < len(gpt) < 102
