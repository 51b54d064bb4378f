"""Persona fidelity: the character classifier tells two distinctive characters apart."""

from __future__ import annotations

import numpy as np
import pytest

from gptjax.data import dialogues
from gptjax.errors import UserError
from gptjax.eval import persona

OLD = "thee thou dost hath wherefore prithee forsooth anon mine sweet lord alas".split()
NEW = "okay yeah cool really sure whatever basically totally stuff guys fine".split()
SHARED = "the a and of to is in it that my".split()


def speeches(words: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words + SHARED, size=rng.integers(5, 12))) + "." for _ in range(n)]


def corpus(seed: int) -> dict[str, list[str]]:
    return {"OLD (Tiny)": speeches(OLD, 60, seed), "NEW (Tiny)": speeches(NEW, 60, seed + 1),
            "QUIET (Tiny)": speeches(SHARED, 2, seed + 2)}


def test_held_out_speeches_of_two_characters_are_labelled_better_than_chance():
    clf = persona.PersonaClassifier.train(corpus(0), order=3, min_chars=500)
    assert sorted(clf.labels) == ["NEW (Tiny)", "OLD (Tiny)"]  # QUIET has too little speech
    held = corpus(100)
    texts = held["OLD (Tiny)"][:20] + held["NEW (Tiny)"][:20]
    truth = ["OLD (Tiny)"] * 20 + ["NEW (Tiny)"] * 20
    result = persona.attribution_rate(clf, texts, truth)
    assert result["chance"] == 0.5 and result["n"] == 40 and result["skipped"] == 0
    assert result["rate"] >= 0.9
    wrong = persona.attribution_rate(clf, texts, truth[::-1])
    assert wrong["rate"] <= 0.1
    assert abs(result["chance_given_predictions"] - 0.5) < 0.1


def test_unjudged_characters_and_empty_replies():
    clf = persona.PersonaClassifier.train(corpus(0), order=3, min_chars=500)
    result = persona.attribution_rate(clf, ["", "thee thou"], ["OLD (Tiny)", "HAMLET (Hamlet)"])
    assert result["n"] == 1 and result["skipped"] == 1 and result["rate"] == 0.0
    scores = clf.scores(["okay yeah", "thee thou dost"])
    assert scores.shape == (2, 2) and np.isfinite(scores).all()
    with pytest.raises(UserError, match="2 replies for 1 requested"):
        persona.attribution_rate(clf, ["a", "b"], ["OLD (Tiny)"])
    with pytest.raises(UserError, match="at least 2 characters"):
        persona.PersonaClassifier.train(corpus(0), min_chars=10_000)


def test_speeches_are_labelled_by_character_and_play():
    play = dialogues.parse_play("t.md", "# Tiny\n\n**ANNA**  \nHi.\n\n**All**  \nHo.\n\n**BEN**  \nYo.\n\n"
                                        "**ANNA**  \nBye.\n")
    assert persona.character_speeches([play]) == {"ANNA (Tiny)": ["Hi.", "Bye."], "BEN (Tiny)": ["Yo."]}
