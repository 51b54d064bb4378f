"""docs/claims.md from results: a measured claim gets its table, test and verdict; the rest their command."""

import json
import os

import pytest

from gptjax.eval.claims_report import claims_in, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLAIMS = os.path.join(ROOT, "experiments", "claims")


def test_every_claim_file_states_its_claim_and_command():
    claims = claims_in(CLAIMS)
    assert len(claims) == 12
    for c in claims:
        assert c.sections["Claim"].startswith("Claim (guide") and c.command.startswith("python -m gptjax.main")
        assert c.baseline in c.runs and c.sections["Estimated time"]


def test_report_measures_a_claim_with_results_and_lists_the_rest(tmp_path):
    results = tmp_path / "results" / "lr_decay"
    results.mkdir(parents=True)
    values = {"constant": [2.10, 2.12, 2.11], "cosine": [2.00, 2.01, 2.02], "wsd": [2.01, 2.00, 2.02],
              "linear": [2.02, 2.01, 2.00]}
    records = [{"run": run, "seed": s, "ngram": False, "val_bpc": v, "seconds": 60.0}
               for run, vs in values.items() for s, v in enumerate(vs)]
    (results / "results.json").write_text(json.dumps({"records": records}))
    doc = write_report(CLAIMS, str(tmp_path / "results"), str(tmp_path / "claims.md"))
    text = open(doc, encoding="utf-8").read()
    section = text.split("## lr decay")[1].split("\n## ")[0]
    assert "| constant (baseline) | 3 | 2.110 ± 0.010 |" in section
    assert "| cosine | 3 | 2.010 ± 0.010 | -0.100" in section and "**Verdict: supported.**" in section
    assert "Welch" in section and "12.0 minutes" in section
    assert os.path.exists(tmp_path / "claims" / "lr_decay.png")
    assert "| [lr decay](#lr-decay) | decaying the learning rate improves the final loss. | supported |" in text
    dropout = text.split("## dropout")[1].split("\n## ")[0]
    assert "Not yet run" in dropout and "--config experiments/claims/dropout.py" in dropout


def test_a_support_run_is_listed_but_not_compared(tmp_path):
    results = tmp_path / "results" / "fine_tuning"
    results.mkdir(parents=True)
    values = {"pretrain": [1.5, 1.6, 1.7], "scratch": [2.6, 2.62, 2.64], "fine-tuned": [2.2, 2.21, 2.22]}
    records = [{"run": run, "seed": s, "ngram": False, "val_bpc": v, "seconds": 60.0}
               for run, vs in values.items() for s, v in enumerate(vs)]
    (results / "results.json").write_text(json.dumps({"records": records}))
    text = open(write_report(CLAIMS, str(tmp_path / "results"), str(tmp_path / "claims.md")), encoding="utf-8").read()
    section = text.split("## fine tuning")[1].split("\n## ")[0]
    assert "| pretrain (not compared) | 3 | 1.600 ± 0.100 | | | | | 60 |" in section
    assert "| scratch (baseline) |" in section and "| fine-tuned | 3 | 2.210 ± 0.010 | -0.410" in section


def test_the_readme_table_is_rewritten_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- claims: begin -->\nold table\n<!-- claims: end -->\n\nafter\n")
    (tmp_path / "docs").mkdir()
    write_report(CLAIMS, str(tmp_path / "results"), str(tmp_path / "docs" / "claims.md"), str(readme))
    text = readme.read_text()
    assert "old table" not in text and text.endswith("<!-- claims: end -->\n\nafter\n")
    assert "| [dropout](docs/claims.md#dropout) | dropout curbs overfitting. | not yet run |" in text
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="lacks the lines"):
        write_report(CLAIMS, str(tmp_path / "results"), str(tmp_path / "docs" / "claims.md"), str(tmp_path / "bare.md"))


def test_diagnostics_of_hand_made_metrics():
    from gptjax.eval import claim_diagnostics

    metrics = [{"step": 0, "layer_grad_norm/h.0": 0.01, "layer_grad_norm/h.1": 1.0, "layer_grad_norm/wte": 5.0}]
    metrics += [{"step": s, "train_loss": loss, "grad_norm": s / 10} for s, loss in
                [(10, 3.0), (20, 2.0), (30, 3.5), (40, 1.0), (90, 1.2), (100, 0.8)]]
    metrics += [{"step": 50, "val_loss": 1.4}, {"step": 100, "val_loss": 1.6, "layer_grad_norm/h.0": 0.5,
                                                "layer_grad_norm/h.1": 0.25, "layer_grad_norm/wte": 1.0}]
    got = claim_diagnostics.summary(claim_diagnostics.series(metrics))
    assert got["gap"] == pytest.approx(1.6 - 1.0)      # the last 10% of steps: 1.2 and 0.8
    assert got["best_at"] == pytest.approx(0.5)         # validation was best at step 50 of 100
    assert got["spikes"] == 1                          # 3.5 > 1.5 x 2.0, after the first 10 steps
    assert got["max_grad_norm"] == pytest.approx(10.0)
    assert got["grad_ratio_init"] == pytest.approx(0.01) and got["grad_ratio_end"] == pytest.approx(2.0)
    assert got["block_grad_init"] == pytest.approx(0.505) and got["block_grad_end"] == pytest.approx(0.375)
    assert "weight_norm" not in got and "last_activation_rms" not in got
    rows = claim_diagnostics.table({"a": [claim_diagnostics.series(metrics)], "b": []})
    assert rows[0].startswith("| arm | val − train loss") and rows[2].startswith("| a | +0.6 | 0.50 | 1.0 | 10 |")


def test_a_claim_with_lines_gets_its_line_plot(tmp_path):
    from experiments.claims import data_size

    results = tmp_path / "results" / "data_size"
    results.mkdir(parents=True)
    records = [{"run": run, "seed": s, "ngram": kind == "5-gram", "val_bpc": 3.0 - 0.1 * i + 0.01 * s, "seconds": 10.0}
               for kind, points in data_size.LINES.items() for i, run in enumerate(points.values())
               for s in ((0,) if kind == "5-gram" else (0, 1, 2))]
    (results / "results.json").write_text(json.dumps({"records": records}))
    text = open(write_report(CLAIMS, str(tmp_path / "results"), str(tmp_path / "claims.md")), encoding="utf-8").read()
    section = text.split("## data size")[1].split("\n## ")[0]
    assert "![data_size lines](claims/data_size_lines.png)" in section
    assert os.path.getsize(tmp_path / "claims" / "data_size_lines.png") > 0


def test_a_findings_verdict_is_the_claims_and_the_rules_is_shown_beside_it(tmp_path):
    from gptjax.eval.claims_report import finding_verdict

    assert finding_verdict("Finding: not supported at equal parameters.") == "not supported"
    assert finding_verdict("Finding: supported in substance (...)") == "supported"
    assert finding_verdict("") is None and finding_verdict("Finding: the arms differ.") is None
    results = tmp_path / "results" / "initialisation"
    results.mkdir(parents=True)
    runs = ["normal-scaled", "normal-unscaled", "xavier-scaled", "xavier-unscaled", "he-scaled", "he-unscaled"]
    records = [{"run": run, "seed": s, "ngram": False, "val_bpc": 3.7 + 0.2 * i + 0.01 * s, "seconds": 40.0}
               for i, run in enumerate(runs) for s in range(3)]
    (results / "results.json").write_text(json.dumps({"records": records}))
    text = open(write_report(CLAIMS, str(tmp_path / "results"), str(tmp_path / "claims.md")), encoding="utf-8").read()
    section = text.split("## initialisation")[1].split("\n## ")[0]
    assert "**Verdict: supported.** (the finding's, below; the per-arm rule" in section and "gives *not supported*" in section
    assert "**Finding:** supported in substance" in section
