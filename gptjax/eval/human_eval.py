"""Blind pairwise human evaluation of generated text: the rating kit and its scores.

`make` reads one JSONL file per system ({"prompt": ..., "output": ...} per line, the same
prompts in the same order in every file; a system is named by its file stem or `name=path`)
and writes, for every prompt and every pair of systems, one item showing the two outputs as
A and B in a random order:

* sheet.html   what raters read; no system names, items in a shuffled order;
* ratings.csv  what raters fill in: `winner` is A, B or tie (a blank row is not rated yet);
* key.json     which system is A and which is B in each item; keep it from the raters.

`score` gives per system its win rate and Bradley-Terry strength, with 95% bootstrap
intervals from resampling the rated items. `python -m gptjax.human_eval` is the command.
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import os
from typing import NamedTuple, Sequence

import numpy as np

from gptjax.errors import UserError

LABELS = ("A", "B")
TIE = "tie"
RATING_COLUMNS = ("item_id", "prompt", "winner", "notes")
EXCERPT_CHARS = 60
BOOTSTRAP_SAMPLES = 1000
MAX_NAMED_ROWS = 5


class Item(NamedTuple):
    item_id: int
    prompt: str
    systems: tuple[str, str]       # the systems shown as A and B
    outputs: tuple[str, str]


# ---- make ------------------------------------------------------------------------------

def parse_input(spec: str) -> tuple[str, str]:
    """`name=path` or `path` (named by its file stem)."""
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
    else:
        name, path = os.path.splitext(os.path.basename(spec))[0], spec
    if not name:
        raise UserError(f"--inputs {spec!r} has an empty system name; use name=path")
    return name, path


def read_records(path: str) -> list[tuple[int, str, str]]:
    """(line number, prompt, output) of every non-blank line of a JSONL file."""
    if not os.path.isfile(path):
        raise UserError(f"input file {path} does not exist; give one JSONL file per system")
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {line_no}: not JSON ({e.msg}); "
                                'write one {"prompt": ..., "output": ...} object per line') from None
            # "text" is what `python -m gptjax.generate --output` writes
            output = record.get("output", record.get("text")) if isinstance(record, dict) else None
            if not (isinstance(record, dict) and isinstance(record.get("prompt"), str) and isinstance(output, str)):
                raise UserError(f'{path} line {line_no}: needs string fields "prompt" and "output" (or "text")')
            records.append((line_no, record["prompt"], output))
    if not records:
        raise UserError(f"{path} has no records; write one JSON object per generated text")
    return records


def load_systems(specs: Sequence[str]) -> dict[str, list[tuple[int, str, str]]]:
    """System name -> records, checked to share the same prompts in the same order."""
    systems: dict[str, list[tuple[int, str, str]]] = {}
    paths = {}
    for spec in specs:
        name, path = parse_input(spec)
        if name in systems:
            raise UserError(f"system name {name!r} is given twice (--inputs); name them with name=path")
        systems[name], paths[name] = read_records(path), path
    if len(systems) < 2:
        raise UserError("--inputs needs at least two systems to compare")
    first, *others = systems
    for name in others:
        a, b = systems[first], systems[name]
        if len(a) != len(b):
            raise UserError(f"{paths[first]} has {len(a)} records but {paths[name]} has {len(b)}; "
                            "give every system the same prompts")
        for (line_a, prompt_a, _), (line_b, prompt_b, _) in zip(a, b):
            if prompt_a != prompt_b:
                raise UserError(f"{paths[name]} line {line_b}: prompt differs from {paths[first]} "
                                f"line {line_a}; give every system the same prompts in the same order")
    return systems


def make_items(systems: dict[str, list[tuple[int, str, str]]], seed: int) -> list[Item]:
    """Every prompt x pair of systems, sides and item order shuffled with `seed`."""
    rng = np.random.default_rng(seed)
    names = list(systems)
    pairs = []
    for index in range(len(systems[names[0]])):
        for x, y in itertools.combinations(names, 2):
            if rng.random() < 0.5:
                x, y = y, x
            pairs.append((systems[x][index][1], (x, y), (systems[x][index][2], systems[y][index][2])))
    order = rng.permutation(len(pairs))
    return [Item(n + 1, *pairs[i]) for n, i in enumerate(order)]


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS - 1] + "\u2026"


def sheet_html(items: list[Item]) -> str:
    blocks = []
    for item in items:
        sides = "".join(f'<div class="out"><h3>{label}</h3><pre>{html.escape(text)}</pre></div>'
                        for label, text in zip(LABELS, item.outputs))
        blocks.append(f'<section><h2>Item {item.item_id}</h2><pre class="prompt">'
                      f'{html.escape(item.prompt)}</pre><div class="pair">{sides}</div></section>')
    style = ("body{font-family:sans-serif;max-width:80em;margin:auto}"
             "pre{white-space:pre-wrap;font-family:serif;font-size:1.05em}"
             ".prompt{background:#eee;padding:.5em}.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}"
             ".out{border:1px solid #ccc;padding:.5em}section{margin-bottom:2em}")
    intro = ("<p>Each item shows a prompt and two continuations, A and B. Judge which continues "
             "the prompt better, then write A, B or tie in the <code>winner</code> column of "
             "ratings.csv, on the row with the same item id.</p>")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Which continuation is better?'
            f"</title><style>{style}</style></head><body><h1>Which continuation is better?</h1>"
            f"{intro}{''.join(blocks)}</body></html>\n")


def make(specs: Sequence[str], out: str, seed: int) -> tuple[int, int]:
    """Write sheet.html, ratings.csv and key.json for the systems into `out`; (items, prompts)."""
    ratings_path = os.path.join(out, "ratings.csv")
    if os.path.exists(ratings_path):
        raise UserError(f"{ratings_path} exists and may hold ratings; choose another --out")
    systems = load_systems(specs)
    items = make_items(systems, seed)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sheet.html"), "w", encoding="utf-8") as f:
        f.write(sheet_html(items))
    with open(ratings_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RATING_COLUMNS)
        writer.writerows([item.item_id, excerpt(item.prompt), "", ""] for item in items)
    key = {"systems": list(systems), "seed": seed,
           "items": {str(item.item_id): dict(zip(LABELS, item.systems)) for item in items}}
    with open(os.path.join(out, "key.json"), "w", encoding="utf-8") as f:
        json.dump(key, f, indent=1)
    return len(items), len(next(iter(systems.values())))


# ---- score -----------------------------------------------------------------------------

def read_key(directory: str) -> dict:
    path = os.path.join(directory, "key.json")
    if not os.path.isfile(path):
        raise UserError(f"no key.json in {directory}; create the kit with `python -m gptjax.human_eval make`")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def name_rows(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_NAMED_ROWS])
    more = len(problems) - MAX_NAMED_ROWS
    return shown + (f"; and {more} more" if more > 0 else "")


def read_ratings(directory: str, key: dict) -> list[tuple[str, str, float]]:
    """(system shown as A, system shown as B, A's score: 1 win, 0.5 tie, 0 loss) per rated item."""
    path = os.path.join(directory, "ratings.csv")
    if not os.path.isfile(path):
        raise UserError(f"no ratings.csv in {directory}; create the kit with `python -m gptjax.human_eval make`")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"item_id", "winner"} - set(reader.fieldnames or ())
        if missing:
            raise UserError(f"{path} has no column {', '.join(sorted(missing))}; "
                            "keep the header written by `make`")
        rows = list(reader)
    problems, seen, rated = [], {}, []
    scores = {"A": 1.0, "B": 0.0, TIE.upper(): 0.5}
    for row_no, row in enumerate(rows, 2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        item_id = (row.get("item_id") or "").strip()
        winner = (row.get("winner") or "").strip().upper()
        if not item_id:
            problems.append(f"row {row_no}: missing item id")
        elif item_id not in key["items"]:
            problems.append(f"row {row_no}: unknown item id {item_id!r}")
        elif item_id in seen:
            problems.append(f"row {row_no}: item {item_id} already rated in row {seen[item_id]}")
        elif winner and winner not in scores:
            problems.append(f"row {row_no}: winner {row['winner'].strip()!r} is not A, B or tie")
        if item_id in key["items"]:
            seen.setdefault(item_id, row_no)
        if not problems and winner:
            pair = key["items"][item_id]
            rated.append((pair["A"], pair["B"], scores[winner]))
    absent = [i for i in key["items"] if i not in seen]
    if absent:
        problems.append(f"item ids {', '.join(absent[:MAX_NAMED_ROWS])}"
                        f"{' ...' if len(absent) > MAX_NAMED_ROWS else ''} have no row")
    if problems:
        raise UserError(f"{path}: {name_rows(problems)}; fix these rows and score again")
    if not rated:
        raise UserError(f"{path} has no rated items yet; write A, B or tie in the winner column")
    return rated


def tally(rated: list[tuple[str, str, float]], systems: list[str], weights: np.ndarray):
    """Wins (ties half) per system and games per pair of systems, per row of item `weights`."""
    k = len(systems)
    index = {s: i for i, s in enumerate(systems)}
    a = np.array([index[x] for x, _, _ in rated])
    b = np.array([index[y] for _, y, _ in rated])
    score = np.array([s for _, _, s in rated])
    credit = np.zeros((len(rated), k))
    credit[np.arange(len(rated)), a] += score
    credit[np.arange(len(rated)), b] += 1 - score
    pair = np.zeros((len(rated), k, k))
    pair[np.arange(len(rated)), a, b] = 1
    pair[np.arange(len(rated)), b, a] = 1
    return weights @ credit, np.einsum("sn,nij->sij", weights, pair)


def bradley_terry(wins: np.ndarray, games: np.ndarray, iterations: int = 10_000) -> np.ndarray:
    """Strengths (summing to 1) by Hunter's MM algorithm, batched over leading axes.

    Every pair of systems gets one extra virtual tie, so a system that wins (or loses) every
    comparison still gets a finite strength; the plain maximum-likelihood estimate diverges.
    """
    k = wins.shape[-1]
    wins = wins + 0.5 * (k - 1)
    games = games + (1 - np.eye(k))
    p = np.full(wins.shape, 1.0 / k)
    for _ in range(iterations):
        new = wins / (games / (p[..., :, None] + p[..., None, :])).sum(-1)
        new /= new.sum(-1, keepdims=True)
        if np.abs(new - p).max() < 1e-12:
            return new
        p = new
    return p


def estimates(rated, systems: list[str], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Win rates and Bradley-Terry strengths, one row per row of item `weights`."""
    wins, games = tally(rated, systems, weights)
    played = games.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = np.where(played > 0, wins / played, np.nan)
    return win_rate, bradley_terry(wins, games)


def score(directory: str, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Per system: rated comparisons, win rate and strength with 95% bootstrap intervals."""
    key = read_key(directory)
    rated = read_ratings(directory, key)
    systems = key["systems"]
    win_rate, strength = (x[0] for x in estimates(rated, systems, np.ones((1, len(rated)))))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(rated), np.full(len(rated), 1 / len(rated)), size=samples)
    boot_rate, boot_strength = estimates(rated, systems, draws.astype(np.float64))
    with np.errstate(invalid="ignore"):
        rate_ci = np.nanpercentile(boot_rate, [2.5, 97.5], axis=0)
    strength_ci = np.percentile(boot_strength, [2.5, 97.5], axis=0)
    games = tally(rated, systems, np.ones((1, len(rated))))[1][0].sum(-1)
    return {"rated": len(rated), "items": len(key["items"]), "samples": samples, "seed": seed,
            "systems": {s: {"comparisons": int(games[i]), "win_rate": float(win_rate[i]),
                            "win_rate_ci": (float(rate_ci[0, i]), float(rate_ci[1, i])),
                            "strength": float(strength[i]),
                            "strength_ci": (float(strength_ci[0, i]), float(strength_ci[1, i]))}
                        for i, s in enumerate(systems)}}
