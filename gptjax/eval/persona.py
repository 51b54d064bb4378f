"""Persona fidelity: how often a generated reply reads like the character it was asked to be.

The judge is a character classifier trained on the training plays' speeches: one character-level
n-gram language model per character (interpolated modified Kneser-Ney, baselines/ngram.py),
and a text goes to the character whose model gives it the highest likelihood (equal priors, so
chance is 1 / number of characters). Why this classifier: per-author character n-gram models are
a standard, strong method of authorship attribution (Peng, Schuurmans and Wang, 2003); they need
no tokenizer or feature choices, they read spelling, punctuation and verse habits as well as
vocabulary; Kneser-Ney smoothing copes with characters who have little text; and the vectorised
counting of baselines/ngram.py trains dozens of models on the plays and scores thousands of
replies in seconds on two cores (scikit-learn's naive Bayes would be a new dependency for the
same job, and is not better at it on short texts).

Only characters with at least `min_chars` characters of training speech are judged (fewer
give models too thin to tell apart); `top_n` keeps the most talkative ones.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import numpy as np

from gptjax.baselines.ngram import NGramLM
from gptjax.data.dialogues import GROUP_SPEAKER, Play
from gptjax.data.tokenizers import CharTokenizer
from gptjax.errors import UserError


def character_label(character: str, title: str) -> str:
    """One name per character across plays (several plays have a Clown): `HAMLET (Hamlet)`."""
    return f"{character} ({title})"


def character_speeches(played: Sequence[Play]) -> dict[str, list[str]]:
    """label -> the character's speeches, in play order (group speakers left out)."""
    out: dict[str, list[str]] = {}
    for play in played:
        for scene in play.scenes:
            for s in scene:
                if not GROUP_SPEAKER.match(s.speaker):
                    out.setdefault(character_label(s.speaker, play.title), []).append(s.text)
    return out


class PersonaClassifier:
    """Per-character character n-gram models; `scores` are log-likelihoods per label."""

    def __init__(self, labels: list[str], models: list[NGramLM], tokenizer: CharTokenizer, order: int):
        self.labels = labels
        self.models = models
        self.tokenizer = tokenizer
        self.order = order
        self.boundary = tokenizer.vocab_size  # an extra id before each text: every text starts alike

    @classmethod
    def train(cls, speeches: Mapping[str, Sequence[str]], order: int = 4, min_chars: int = 5000,
              top_n: int = 0) -> "PersonaClassifier":
        sizes = Counter({label: sum(map(len, texts)) for label, texts in speeches.items()})
        labels = [label for label, n in sizes.most_common(top_n or None) if n >= min_chars]
        if len(labels) < 2:
            raise UserError(f"persona fidelity needs at least 2 characters with {min_chars} characters of "
                            f"training speech, found {len(labels)}; lower min_chars or add plays")
        tokenizer = CharTokenizer("".join(t for label in labels for t in speeches[label]))
        classifier = cls(labels, [], tokenizer, order)
        classifier.models = [NGramLM.train(classifier.stream(speeches[label])[0], order, tokenizer.vocab_size + 1)
                             for label in labels]
        return classifier

    def stream(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, which text each id belongs to, -1 for the boundary ids before each text)."""
        pad = np.full(self.order - 1, self.boundary, np.int64)
        pieces, owners = [], []
        for i, text in enumerate(texts):
            ids = self.tokenizer.encode(text).astype(np.int64)
            pieces += [pad, ids]
            owners += [np.full(len(pad), -1), np.full(len(ids), i)]
        return np.concatenate(pieces or [pad]), np.concatenate(owners or [np.full(len(pad), -1)])

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(labels)) total log-likelihood of each text under each character."""
        ids, owner = self.stream(texts)
        keep = owner >= 0
        out = np.zeros((len(texts), len(self.labels)))
        for k, model in enumerate(self.models):
            out[:, k] = np.bincount(owner[keep], weights=model.log_probs(ids)[keep], minlength=len(texts))
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most likely character of each text; "" for an empty text (nothing to judge)."""
        best = self.scores(texts).argmax(axis=1) if texts else np.zeros(0, int)
        return [self.labels[k] if text.strip() else "" for k, text in zip(best, texts)]


def attribution_rate(classifier: PersonaClassifier, replies: Sequence[str],
                     requested_characters: Sequence[str]) -> dict:
    """How often each reply is attributed to the character requested for it.

    Replies requested from a character the classifier does not judge are left out (`skipped`).
    `chance` is 1 / number of characters; `chance_given_predictions` is the rate expected if
    the replies ignored the request while keeping the classifier's own preferences
    (sum over characters of P(predicted = c) * P(requested = c)), the fairer floor when the
    classifier favours some characters.
    """
    if len(replies) != len(requested_characters):
        raise UserError(f"attribution_rate got {len(replies)} replies for {len(requested_characters)} "
                        "requested characters; give one character per reply")
    known = set(classifier.labels)
    pairs = [(r, c) for r, c in zip(replies, requested_characters) if c in known]
    predicted = classifier.predict([r for r, _ in pairs])
    requested = [c for _, c in pairs]
    n = len(pairs)
    rate = float(np.mean([p == c for p, c in zip(predicted, requested)])) if n else float("nan")
    p_pred, p_req = Counter(predicted), Counter(requested)
    matched = sum(p_pred[c] * p_req[c] for c in p_req) / n ** 2 if n else float("nan")
    return {"rate": rate, "chance": 1.0 / len(classifier.labels), "chance_given_predictions": matched,
            "n": n, "skipped": len(replies) - n}
