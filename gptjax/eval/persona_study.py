"""Measuring a chat model against its base on held-out conversations: assistant-token bits per
char, persona fidelity, and overlap and diversity of replies (experiments/persona_eval.py).

Every model is prompted with one template (the one the fine-tuned model was trained with), so
the base is measured on exactly what the fine-tuned model sees. Prompts are the first exchange
of each held-out conversation: the system text and the user's speech; the reference is the real
reply.

Persona fidelity needs characters the judge knows, and the judge knows only the training plays'
characters (held-out plays have other casts). So each held-out prompt is asked of a judged
character (cycled in a seeded order): the rate is how often the reply is attributed to it. The
control asks the same prompt of a different judged character and still counts attributions to
the first: if the persona, and not the prompt, drives the reply, that rate falls to chance.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from gptjax.data import conversations as conv
from gptjax.data.chat_template import ChatTemplate, Turn
from gptjax.data.dialogues import persona_text
from gptjax.data.tokenizers import token_lengths
from gptjax.errors import UserError
from gptjax.eval import persona, text_metrics
from gptjax.eval.scoring import evaluate, make_eval_step
from gptjax.generate.generator import Generator
from gptjax.generate.settings import GenerationSettings


def split_conversations(data_config, seed: int) -> dict[str, list[conv.Conversation]]:
    """The conversations of each split, as the fine-tuning run with this data config dealt them."""
    if data_config.source == "dialogues":
        from gptjax.data.dialogues import split_dialogues

        return split_dialogues(data_config, seed)
    conversations, _ = conv.read_conversations(data_config.path, data_config.strict)
    return conv.split_conversations(conversations, data_config.val_fraction, data_config.test_fraction, seed)


def assistant_bpc(model: nnx.Module, template: ChatTemplate, conversations: Sequence[conv.Conversation],
                  block_size: int, batch_size: int = 16) -> dict:
    """Loss and bits per char of the assistant tokens (with their end of turn) of the
    conversations, packed as fine-tuning packs them."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    packed = conv.pack_split(template, conversations, block_size, seed=0)
    if not packed.conversations:
        raise UserError(f"none of {len(conversations)} conversations keeps an assistant token within the "
                        f"model's context of {block_size} tokens; score a model with a longer context")
    step = jax.jit(make_eval_step(graphdef, *token_lengths(template.tokenizer)))
    batches = ((np.concatenate([i, t[:, -1:]], axis=1), w, s)
               for i, t, w, s in conv.sequential_conversation_batches(packed, batch_size))
    return evaluate(step, params, rest, batches)


def first_exchange(c: conv.Conversation) -> tuple[list[Turn], str]:
    """(prompt turns up to the first assistant turn, that turn's text)."""
    k = next(i for i, t in enumerate(c.turns) if t.role == "assistant")
    return list(c.turns[:k]), c.turns[k].text


def with_system(turns: Sequence[Turn], system: str) -> list[Turn]:
    return [Turn("system", system)] + [t for t in turns if t.role != "system"]


def replies(generator: Generator, template: ChatTemplate, prompts: Sequence[Sequence[Turn]],
            settings: GenerationSettings) -> list[str]:
    """The model's reply to each prompt, ended by the template's end of turn."""
    s = dataclasses.replace(settings, stop_tokens=template.stop_tokens, stop_strings=template.stop_strings)
    room = generator.block_size - s.max_new_tokens
    ids = [template.render(template.fit(list(p), room), open_reply=True)[0] for p in prompts]
    return [c[0].text.strip() for c in generator.generate(ids, s)]


@dataclasses.dataclass(frozen=True)
class FidelityPrompts:
    """Held-out prompts, each asked of a judged character and, as the control, of another one."""

    prompts: list[list[Turn]]
    requested: list[str]      # classifier labels, "NAME (Title)"
    right: list[str]          # system texts naming the requested character
    wrong: list[str]          # system texts naming a different judged character


def fidelity_prompts(classifier: persona.PersonaClassifier, conversations: Sequence[conv.Conversation],
                     seed: int) -> FidelityPrompts:
    labels = list(classifier.labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    requested = [labels[order[i % len(labels)]] for i in range(len(conversations))]
    others = [labels[order[(i + 1) % len(labels)]] for i in range(len(conversations))]  # never the requested one
    system = lambda label: persona_text(*label_parts(label))  # noqa: E731
    return FidelityPrompts([first_exchange(c)[0] for c in conversations], requested,
                           [system(r) for r in requested], [system(o) for o in others])


def label_parts(label: str) -> tuple[str, str]:
    """`HAMLET (Hamlet)` -> (HAMLET, Hamlet)."""
    name, _, title = label.rpartition(" (")
    return name, title[:-1]


def fidelity(generator: Generator, template: ChatTemplate, classifier: persona.PersonaClassifier,
             fp: FidelityPrompts, settings: GenerationSettings) -> dict:
    """Attribution to the requested character with its persona (`right`) and with another's (`wrong`)."""
    out = {}
    for name, systems in (("right", fp.right), ("wrong", fp.wrong)):
        prompts = [with_system(p, s) for p, s in zip(fp.prompts, systems)]
        out[name] = persona.attribution_rate(classifier, replies(generator, template, prompts, settings),
                                             fp.requested)
    return out


def overlap(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """BLEU and chrF against the real replies; distinct-1/2 and 4-gram repetition of the replies."""
    return {"bleu": text_metrics.bleu(hypotheses, list(references)),
            "chrf": text_metrics.chrf(hypotheses, list(references)),
            "distinct_1": text_metrics.distinct_n(hypotheses, 1), "distinct_2": text_metrics.distinct_n(hypotheses, 2),
            "repetition": text_metrics.repetition_rate(hypotheses, 4),
            "mean_words": float(np.mean([len(h.split()) for h in hypotheses])) if hypotheses else 0.0}
