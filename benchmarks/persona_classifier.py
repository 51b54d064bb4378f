"""How well the persona-fidelity judge tells the plays' characters apart.

    python -m benchmarks.persona_classifier

On the training plays of the dialogue split (seed 0, val 0.1, test 0.05), a fifth of each
character's speeches is held out; the classifier (eval/persona.py) is trained on the rest for
the N most talkative characters and labels the held-out speeches. Prints accuracy against
chance for all held-out speeches and for those of at least 200 characters (the length of a
typical generated reply), per n-gram order, with the seconds each run took.
"""

from __future__ import annotations

import time
import zlib

import numpy as np

from gptjax.data import dialogues
from gptjax.eval import persona

TOP_N = (10, 20, 40)
ORDERS = (3, 4, 5)
HELD_OUT = 0.2
LONG = 200


def held_out_split(speeches: dict[str, list[str]], seed: int) -> tuple[dict, list[tuple[str, str]]]:
    train, test = {}, []
    for label, texts in speeches.items():
        held = np.random.default_rng([seed, zlib.crc32(label.encode())]).random(len(texts)) < HELD_OUT
        train[label] = [t for t, h in zip(texts, held) if not h]
        test += [(t, label) for t, h in zip(texts, held) if h]
    return train, test


def main() -> None:
    played = dialogues.parsed_plays()
    train_plays = {c.group for c in dialogues.dialogue_splits(played, 0.1, 0.05, seed=0)["train"]}
    speeches = persona.character_speeches([p for p in played if p.name in train_plays])
    train, test = held_out_split(speeches, seed=0)
    print(f"{len(train_plays)} training plays, {len(speeches)} characters")
    for order in ORDERS:
        for n in TOP_N:
            start = time.perf_counter()
            clf = persona.PersonaClassifier.train(train, order=order, min_chars=0, top_n=n)
            pairs = [(t, c) for t, c in test if c in set(clf.labels)]
            every = persona.attribution_rate(clf, [t for t, _ in pairs], [c for _, c in pairs])
            long = [(t, c) for t, c in pairs if len(t) >= LONG]
            longer = persona.attribution_rate(clf, [t for t, _ in long], [c for _, c in long])
            print(f"order {order} top {n:2d}: held-out accuracy {every['rate']:.3f} on {every['n']} speeches, "
                  f"{longer['rate']:.3f} on {longer['n']} of >= {LONG} chars; chance {every['chance']:.3f} "
                  f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
