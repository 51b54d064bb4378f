import csv
import json
import os

import numpy as np
import pytest

from gptjax.cli.human_eval import main
from gptjax.eval import human_eval
from gptjax.errors import UserError

PROMPTS = [f"Prompt number {i}:\nROMEO." for i in range(6)]


def write_system(path, name, prompts=PROMPTS):
    with open(path, "w", encoding="utf-8") as f:
        for i, prompt in enumerate(prompts):
            f.write(json.dumps({"prompt": prompt, "output": f"<{name.upper()} says {i}>"}) + "\n")
    return str(path)


def make_kit(tmp_path, names, seed=0):
    specs = [write_system(tmp_path / f"{n}.jsonl", n) for n in names]
    out = tmp_path / "kit"
    human_eval.make(specs, str(out), seed)
    return out


def read_rows(kit):
    with open(kit / "ratings.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_rows(kit, rows):
    with open(kit / "ratings.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=human_eval.RATING_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def rate(kit, prefer):
    """Fill the winner column with the label of the system `prefer(systems)` picks (or tie)."""
    key = json.loads((kit / "key.json").read_text())
    rows = read_rows(kit)
    for row in rows:
        pair = key["items"][row["item_id"]]
        choice = prefer(pair["A"], pair["B"])
        row["winner"] = "tie" if choice is None else ("A" if choice == pair["A"] else "B")
    write_rows(kit, rows)


def test_make_writes_a_blind_shuffled_kit(tmp_path):
    kit = make_kit(tmp_path, ["base", "tuned"])
    sheet = (kit / "sheet.html").read_text()
    ratings = (kit / "ratings.csv").read_text()
    key = json.loads((kit / "key.json").read_text())
    assert "base" not in sheet and "tuned" not in sheet and "base" not in ratings
    assert "&lt;BASE says 3&gt;" in sheet                       # outputs are escaped, not markup
    assert [r["item_id"] for r in read_rows(kit)] == [str(i) for i in range(1, 7)]
    assert {r["winner"] for r in read_rows(kit)} == {""}
    assert key["systems"] == ["base", "tuned"]
    assert {v["A"] for v in key["items"].values()} == {"base", "tuned"}   # sides are shuffled
    for item_id, pair in key["items"].items():
        section = sheet.split(f"<h2>Item {item_id}</h2>")[1].split("</section>")[0]
        assert section.index(f"&lt;{pair['A'].upper()} says") < section.index(f"&lt;{pair['B'].upper()} says")


def test_three_systems_give_every_pair_for_every_prompt(tmp_path):
    kit = make_kit(tmp_path, ["x", "y", "z"])
    key = json.loads((kit / "key.json").read_text())
    assert len(key["items"]) == 3 * len(PROMPTS)
    pairs = [frozenset(p.values()) for p in key["items"].values()]
    assert {pairs.count(p) for p in set(pairs)} == {len(PROMPTS)}


def test_name_equals_path_names_the_system(tmp_path):
    a = write_system(tmp_path / "a.jsonl", "a")
    b = write_system(tmp_path / "b.jsonl", "b")
    human_eval.make([f"gpt={a}", f"ngram={b}"], str(tmp_path / "kit"), 0)
    assert json.loads((tmp_path / "kit" / "key.json").read_text())["systems"] == ["gpt", "ngram"]


def test_always_preferred_system_wins(tmp_path, capsys):
    kit = make_kit(tmp_path, ["good", "meh", "bad"])
    rank = {"good": 0, "meh": 1, "bad": 2}
    rate(kit, lambda a, b: min(a, b, key=rank.get))
    result = human_eval.score(str(kit), samples=200)
    s = result["systems"]
    assert s["good"]["win_rate"] == 1.0 and s["bad"]["win_rate"] == 0.0
    assert s["good"]["strength"] > s["meh"]["strength"] > s["bad"]["strength"]
    assert s["good"]["comparisons"] == 2 * len(PROMPTS)
    lo, hi = s["good"]["strength_ci"]
    assert lo <= s["good"]["strength"] <= hi
    main(["score", str(kit), "--samples", "50"])
    printed = capsys.readouterr().out
    assert printed.index("good") < printed.index("meh") < printed.index("bad")
    assert "18 of 18 items rated" in printed


def test_ties_count_half_and_blank_rows_are_not_rated_yet(tmp_path):
    kit = make_kit(tmp_path, ["p", "q"])
    rate(kit, lambda a, b: None)
    rows = read_rows(kit)
    rows[0]["winner"] = ""
    write_rows(kit, rows)
    result = human_eval.score(str(kit), samples=50)
    assert result["rated"] == len(PROMPTS) - 1
    for s in result["systems"].values():
        assert s["win_rate"] == 0.5
        assert s["strength"] == pytest.approx(0.5)


def test_bradley_terry_solves_the_likelihood_equations():
    rng = np.random.default_rng(0)
    beats = np.triu(rng.integers(0, 8, size=(4, 4)), 1)          # beats[i, j]: i won against j
    beats = beats + np.triu(rng.integers(0, 8, size=(4, 4)), 1).T
    wins, games = beats.sum(1).astype(float), (beats + beats.T).astype(float)
    p = human_eval.bradley_terry(wins, games)
    assert p.sum() == pytest.approx(1.0)
    w, g = wins + 1.5, games + 1 - np.eye(4)                    # with the virtual ties
    expected_wins = (g * p[:, None] / (p[:, None] + p[None, :])).sum(1)
    np.testing.assert_allclose(expected_wins, w, rtol=1e-8)


def test_bootstrap_is_reproducible_with_its_seed(tmp_path):
    kit = make_kit(tmp_path, ["u", "v"])
    rate(kit, lambda a, b: "u" if len(a) % 2 else b)
    assert human_eval.score(str(kit), seed=3, samples=100) == human_eval.score(str(kit), seed=3, samples=100)


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[1].update(item_id="99"), "row 3: unknown item id '99'"),
    (lambda rows: rows[2].update(winner="C"), "row 4: winner 'C' is not A, B or tie"),
    (lambda rows: rows[0].update(item_id=""), "row 2: missing item id"),
    (lambda rows: rows[3].update(item_id=rows[0]["item_id"]), "row 5: item"),
])
def test_bad_ratings_name_the_rows_and_exit_2(tmp_path, capsys, edit, message):
    kit = make_kit(tmp_path, ["m", "n"])
    rows = read_rows(kit)
    for row in rows:
        row["winner"] = "A"
    edit(rows)
    write_rows(kit, rows)
    with pytest.raises(UserError, match=message):
        human_eval.score(str(kit))
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(kit)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_items_without_a_row_are_named(tmp_path):
    kit = make_kit(tmp_path, ["m", "n"])
    rows = read_rows(kit)
    write_rows(kit, rows[:-1])
    with pytest.raises(UserError, match=f"item ids {rows[-1]['item_id']} have no row"):
        human_eval.score(str(kit))


def test_inputs_with_different_prompts_are_refused(tmp_path):
    a = write_system(tmp_path / "a.jsonl", "a")
    b = write_system(tmp_path / "b.jsonl", "b", PROMPTS[:2] + ["another prompt"] + PROMPTS[3:])
    with pytest.raises(UserError, match="b.jsonl line 3: prompt differs"):
        human_eval.make([a, b], str(tmp_path / "kit"), 0)


def test_bad_jsonl_and_overwrites_are_refused(tmp_path):
    a = write_system(tmp_path / "a.jsonl", "a")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "output": "o"}\n{"prompt": "p"}\n')
    with pytest.raises(UserError, match='bad.jsonl line 2: needs string fields "prompt" and "output"'):
        human_eval.make([a, str(bad)], str(tmp_path / "kit"), 0)
    kit = make_kit(tmp_path, ["c", "d"])
    with pytest.raises(UserError, match="exists"):
        human_eval.make([a, str(tmp_path / "c.jsonl")], str(kit), 0)
    with pytest.raises(UserError, match="at least two systems"):
        human_eval.make([a], str(tmp_path / "kit2"), 0)
    assert not os.path.exists(tmp_path / "kit2")
