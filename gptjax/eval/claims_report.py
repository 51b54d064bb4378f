"""docs/claims.md from the claim sweeps' results: one section per claim of the guide, with its
statement, setup, table, effect size, significance test and verdict.

Each claim is an experiment file `experiments/claims/<name>.py` whose docstring holds the
claim ("Claim (guide N): ..."), the arms, the regime, the diagnostic and the estimated time,
and whose get_config() is a sweep. A sweep run with
`python -m gptjax.main --config experiments/claims/<name>.py --workdir runs/claims/<name>`
writes results.json (every seed's figures); `collect` copies it, with the validation curves
read from the run directories, into `experiments/claims/results/<name>/` (small JSON, kept in
the repository), and `write_report` turns those files into the doc and its plots. A claim
without results is listed as not yet run, with its command.

Every arm is compared with the claim's baseline (`BASELINE` in the experiment file, else its
first run) on final validation bits per char, lower better: Welch's t-test and a percentile
bootstrap of the difference of means, Cohen's d as the effect size, and the verdict rule of
`gptjax.eval.significance`; the claim's verdict combines its arms' (`significance.combine`),
unless the experiment file's "Finding:" paragraph, written after reading the results, states
one (a claim such as "initialisation decides whether a deep network trains" is supported by
arms that differ from the baseline in either direction); the doc then shows both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import statistics
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gptjax.eval import claim_diagnostics, significance  # noqa: E402
from gptjax.experiments import parse_runs  # noqa: E402
from gptjax.workdir import read_metrics, write_json  # noqa: E402

METRIC = "val_bpc"


class Claim(NamedTuple):
    name: str
    path: str
    sections: dict      # "Claim", "Arms", "Regime", "Diagnostic", "Estimated time", "Finding" -> text
    command: str
    runs: list          # run names, in sweep order
    baseline: str
    support: tuple      # runs the sweep needs but the claim does not compare (a base to start from)
    lines: dict         # LINES of the file: {label: {x: run}}, drawn as lines against x (x label: X_LABEL)
    x_label: str


def load_claim(path: str) -> Claim:
    """The claim an experiment file states and the sweep it defines."""
    name = os.path.basename(path)[:-3]
    spec = importlib.util.spec_from_file_location(f"claim_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.__doc__ or ""
    command = next((line.strip() for line in doc.splitlines() if line.strip().startswith("python -m")), "")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc) if p.strip()]
    sections = {key: next((p for p in paragraphs if p.startswith(key)), "")
                for key in ("Claim", "Arms", "Regime", "Diagnostic", "Estimated time", "Finding")}
    runs = [r.name for r in parse_runs(module.get_config())]
    return Claim(name, path, sections, command, runs, getattr(module, "BASELINE", runs[0]),
                 tuple(getattr(module, "SUPPORT_RUNS", ())), getattr(module, "LINES", {}),
                 getattr(module, "X_LABEL", ""))


def claims_in(directory: str) -> list[Claim]:
    paths = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".py"))
    return [load_claim(p) for p in paths if "def get_config" in open(p, encoding="utf-8").read()]


def collect(sweep_dir: str, results_dir: str) -> str:
    """Copy a finished sweep's results.json, with each run's validation curve and diagnostic
    series (`claim_diagnostics.series`), into results_dir."""
    with open(os.path.join(sweep_dir, "results.json")) as f:
        records = json.load(f)["records"]
    metrics = {f"{r['run']}-s{r['seed']}": read_metrics(r["workdir"]) for r in records if not r["ngram"]}
    curves = {run: [[m["tokens_seen"], m[METRIC]] for m in ms if METRIC in m] for run, ms in metrics.items()}
    os.makedirs(results_dir, exist_ok=True)
    shutil.copyfile(os.path.join(sweep_dir, "results.json"), os.path.join(results_dir, "results.json"))
    write_json(os.path.join(results_dir, "curves.json"), curves)
    write_json(os.path.join(results_dir, "diagnostics.json"),
               {run: claim_diagnostics.series(ms) for run, ms in metrics.items()})
    return results_dir


def mean_seconds(records: list[dict]) -> str:
    """Wall-clock seconds of an arm's runs, each (compiling included): what the choice costs."""
    return f"{statistics.fmean(r['seconds'] for r in records):.0f}" if records else "-"


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def claim_section(claim: Claim, results_dir: str, figures_dir: str, doc_dir: str) -> tuple[str, str]:
    """(markdown section, verdict) of one claim; the verdict is "not yet run" without results."""
    s = claim.sections
    head = [f"## {claim.name.replace('_', ' ')}", "", f"**{s['Claim']}**", ""]
    head += [line for key in ("Arms", "Regime", "Diagnostic") if s[key] for line in (s[key], "")]
    path = os.path.join(results_dir, "results.json")
    if not os.path.exists(path):
        return "\n".join(head + [f"**Not yet run.** {s['Estimated time']}", "", f"    {claim.command}", ""]), \
            "not yet run"
    with open(path) as f:
        records = json.load(f)["records"]
    by_run = {name: [r for r in records if r["run"] == name and METRIC in r] for name in claim.runs}
    base = [r[METRIC] for r in by_run[claim.baseline]]
    lines = ["| arm | seeds | val bits/char | Δ vs baseline [95% bootstrap] | Cohen's d | Welch p | verdict | s/run |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, rows in by_run.items():
        values = [r[METRIC] for r in rows]
        if name == claim.baseline or name in claim.support or len(values) < 2 or len(base) < 2:
            role = " (baseline)" if name == claim.baseline else " (not compared)" if name in claim.support else ""
            lines.append(f"| {name}{role} | {len(values)} | {mean_std(values)} | | | | | {mean_seconds(rows)} |")
            continue
        c = significance.compare(values, base)
        v = significance.verdict(c)
        verdicts.append(v)
        lines.append(f"| {name} | {len(values)} | {mean_std(values)} | {c.difference:+.3f} [{c.ci_low:+.3f}, "
                     f"{c.ci_high:+.3f}] | {c.cohens_d:+.2f} | {c.p:.3g} | {v} | {mean_seconds(rows)} |")
    rule = significance.combine(verdicts) if verdicts else "depends"
    verdict = finding_verdict(s["Finding"]) or rule
    said = "" if verdict == rule else (f" (the finding's, below; the per-arm rule of gptjax/eval/significance.py "
                                        f"gives *{rule}*, since its arms are compared with {claim.baseline} alone)")
    minutes = sum(r["seconds"] for r in records) / 60
    figure = plot_claim(claim, by_run, results_dir, os.path.join(figures_dir, f"{claim.name}.png"))
    body = lines + ["", f"Test: Welch's t-test and a percentile bootstrap (10,000 resamples) of the difference of "
                        f"mean final validation bits per char against {claim.baseline}; effect size Cohen's d. "
                        f"**Verdict: {verdict}.**{said} Measured time: {minutes:.1f} minutes "
                        f"({s['Estimated time'] or 'no estimate'}).", "",
                    f"![{claim.name}]({os.path.relpath(figure, doc_dir)})", ""]
    if claim.lines:
        lines_figure = plot_lines(claim, by_run, os.path.join(figures_dir, f"{claim.name}_lines.png"))
        body += [f"![{claim.name} lines]({os.path.relpath(lines_figure, doc_dir)})", ""]
    body += diagnostics_section(claim, results_dir)
    if s["Finding"]:
        body += [f"**{s['Finding'].split(':', 1)[0]}:**{s['Finding'].split(':', 1)[1]}", ""]
    return "\n".join(head + body), verdict


def finding_verdict(finding: str) -> str | None:
    """The verdict a "Finding: <verdict> ..." paragraph states, written after reading the results."""
    text = finding.removeprefix("Finding:").strip()
    return next((v for v in sorted(significance.VERDICTS, key=len, reverse=True) if text.startswith(v)), None)


def diagnostics_section(claim: Claim, results_dir: str) -> list[str]:
    """The table of `claim_diagnostics`, per arm, when the results hold the series."""
    path = os.path.join(results_dir, "diagnostics.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        runs = json.load(f)
    by_arm = {name: [v for k, v in runs.items() if arm_of(k) == name] for name in claim.runs}
    rows = claim_diagnostics.table(by_arm)
    if not rows:
        return []
    return ["Diagnostics, means over seeds (gptjax/eval/claim_diagnostics.py says what each one shows):", "",
            *rows, ""]


def plot_claim(claim: Claim, by_run: dict, results_dir: str, path: str) -> str:
    """Final validation bits per char per seed and arm; beside it the mean curves, when collected."""
    curves_path = os.path.join(results_dir, "curves.json")
    curves = json.load(open(curves_path)) if os.path.exists(curves_path) else {}
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(11 if curves else 6, 4), squeeze=False)
    ax = axes[0][0]
    for i, (name, rows) in enumerate(by_run.items()):
        values = [r[METRIC] for r in rows]
        ax.scatter([i] * len(values), values, alpha=0.7)
        if values:
            ax.hlines(statistics.fmean(values), i - 0.25, i + 0.25, color="black")
    ax.set_xticks(range(len(by_run)), list(by_run), rotation=30, ha="right")
    ax.set_ylabel("final validation bits per char")
    ax.grid(alpha=0.3)
    if curves:
        ax = axes[0][1]
        for name in by_run:
            runs = [dict(map(tuple, v)) for k, v in curves.items() if arm_of(k) == name]
            if runs:
                points = sorted(set.intersection(*(set(c) for c in runs)))
                ax.plot(points, [statistics.fmean(c[p] for c in runs) for p in points], marker=".", label=name)
        ax.set_xlabel("training tokens seen")
        ax.set_ylabel("validation bits per char")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_lines(claim: Claim, by_run: dict, path: str) -> str:
    """The claim's LINES: mean final validation bits per char (± std over seeds) against x, log scale."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in claim.lines.items():
        xs = sorted(x for x, run in points.items() if by_run.get(run))
        values = [[r[METRIC] for r in by_run[points[x]]] for x in xs]
        ax.errorbar(xs, [statistics.fmean(v) for v in values],
                    yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in values], marker="o", capsize=3,
                    label=label)
    ax.set_xscale("log")
    ax.set_xlabel(claim.x_label)
    ax.set_ylabel("final validation bits per char")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def save_figure(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def arm_of(run_key: str) -> str:
    """The arm of a collected run key, "<arm>-s<seed>"."""
    return run_key.rsplit("-s", 1)[0]


README_BEGIN, README_END = "<!-- claims: begin -->", "<!-- claims: end -->"


def write_readme_table(readme_path: str, table: list[str]) -> None:
    """Put the verdict table between the README's markers (generated, like docs/claims.md)."""
    with open(readme_path, encoding="utf-8") as f:
        text = f.read()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme_path} lacks the lines {README_BEGIN} and {README_END} the table goes between")
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    with open(readme_path, "w", encoding="utf-8") as f:
        f.write(head + README_BEGIN + "\n" + "\n".join(table) + "\n" + README_END + tail)


def write_report(claims_dir: str, results_root: str, doc_path: str, readme_path: str = "") -> str:
    """docs/claims.md (and its figures beside it, in claims/) from every claim's collected results;
    with `readme_path`, the verdict table in the README too, its links pointing into the doc."""
    doc_dir = os.path.dirname(os.path.abspath(doc_path))
    figures = os.path.join(doc_dir, "claims")
    claims = claims_in(claims_dir)
    sections, rows = [], []
    for claim in claims:
        text, verdict = claim_section(claim, os.path.join(results_root, claim.name), figures, doc_dir)
        sections.append(text)
        rows.append(f"| [{claim.name.replace('_', ' ')}](#{claim.name.replace('_', '-')}) | "
                    f"{claim.sections['Claim'].split(':', 1)[-1].strip()} | {verdict} |")
    intro = ["# The guide's claims, measured", "",
             "Generated by `python -m experiments.claims.report` from `experiments/claims/results/`; "
             "do not edit by hand. Each claim is one sweep (`experiments/claims/<name>.py`, arms x 3 seeds) "
             "on the 2-core CPU the study is sized for; a verdict is *supported*, *not supported* or "
             "*depends* by the rule in `gptjax/eval/significance.py`, or as the claim's finding states "
             "after reading the results (the section says so where the two differ).", "",
             "| claim | statement | verdict |", "|---|---|---|", *rows, ""]
    with open(doc_path, "w", encoding="utf-8") as f:
        f.write("\n".join(intro + sections))
    if readme_path:
        link = os.path.relpath(doc_path, os.path.dirname(os.path.abspath(readme_path)))
        write_readme_table(readme_path, ["| claim | statement | verdict |", "|---|---|---|",
                                         *(row.replace("](#", f"]({link}#") for row in rows)])
    return doc_path
