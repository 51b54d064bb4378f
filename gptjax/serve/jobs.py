"""A checked request as work for an engine: prompt ids and sampling, or a 400 naming the field.

Chat messages are rendered with the model's own chat template (role tokens, or plain
`Role: text` lines), exactly as the terminal chat and fine-tuning render them.
"""

from __future__ import annotations

import secrets

import numpy as np

from gptjax.errors import UserError
from gptjax.data.chat_template import Turn
from gptjax.serve.api_errors import bad
from gptjax.serve.engine import Engine, Sampling
from gptjax.serve.schemas import ChatRequest, CompletionRequest, SamplingRequest

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP_STRINGS = 4


def chat_prompt(req: ChatRequest, engine: Engine) -> np.ndarray:
    if engine.template is None:
        raise bad(f"model {engine.name} cannot chat: {engine.no_chat}", "model", "model_not_supported")
    turns = []
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            raise bad(f"messages[{i}].role is {m.role!r}; use one of system, developer, user, assistant",
                      f"messages[{i}].role")
        encoded(engine, m.text(), f"messages[{i}].content")
        turns.append(Turn(ROLES[m.role], m.text()))
    if engine.overflow == "sliding":  # drop the oldest turns (not the persona) to leave room for a reply
        room = min(budget(req) or engine.max_tokens, engine.block_size // 2)
        turns = engine.template.fit(turns, engine.block_size - room)
    return engine.template.render(turns, open_reply=True)[0]


def completion_prompts(req: CompletionRequest, engine: Engine) -> list[np.ndarray]:
    texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if not texts:
        raise bad("prompt is an empty list; give at least one prompt", "prompt")
    start = engine.tokenizer.special_ids.get("<|endoftext|>")
    prompts = []
    for i, text in enumerate(texts):
        ids = encoded(engine, text, "prompt" if isinstance(req.prompt, str) else f"prompt[{i}]")
        if not len(ids):
            if start is None:
                raise bad("the prompt is empty; give at least one character to continue", "prompt")
            ids = np.array([start], np.int32)
        prompts.append(ids)
    return prompts


def encoded(engine: Engine, text: str, where: str) -> np.ndarray:
    try:
        return engine.generator.encode(text, where=where)
    except UserError as e:
        raise bad(str(e), where) from None


def budget(req: SamplingRequest) -> int | None:
    return req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens


def sampling(req: SamplingRequest, engine: Engine, longest_prompt: int, chat: bool) -> Sampling:
    """The request's sampling for prompts of up to `longest_prompt` tokens; 400 on any bad value."""
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    n = 1 if req.n is None else req.n
    if not 0 <= temperature <= 2:
        raise bad(f"temperature={temperature} is outside [0, 2]; use 0 for greedy decoding", "temperature")
    if not 0 < top_p <= 1:
        raise bad(f"top_p={top_p} is outside (0, 1]; use e.g. 0.9, or 1 to turn it off", "top_p")
    if not 1 <= n <= engine.max_batch:
        raise bad(f"n={n} is outside [1, {engine.max_batch}] (this server's batch)", "n")
    penalties = {}
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(req, name)
        penalties[name] = 0.0 if value is None else value
        if not -2 <= penalties[name] <= 2:
            raise bad(f"{name}={value} is outside [-2, 2]", name)
    room = engine.block_size - longest_prompt
    limit = budget(req)
    if limit is not None and not 1 <= limit <= engine.max_tokens:
        raise bad(f"{param}={limit} is outside [1, {engine.max_tokens}] (this server's limit)", param)
    if engine.overflow == "error":
        if limit is None:
            limit = min(engine.max_tokens, room)
        if limit < 1 or limit > room:
            raise bad(f"the prompt has {longest_prompt} tokens and {param}={limit}: more than the model's "
                      f"context of {engine.block_size} tokens; shorten the prompt or lower {param}", param,
                      "context_length_exceeded")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > MAX_STOP_STRINGS or any(s == "" for s in stops):
        raise bad(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings", "stop")
    template = engine.template if chat else None
    endoftext = engine.tokenizer.special_ids.get("<|endoftext|>")
    stop_tokens = template.stop_tokens if template else (() if endoftext is None else (endoftext,))
    return Sampling(max_new=limit or engine.max_tokens, n=n, temperature=temperature, top_p=top_p,
                    frequency=penalties["frequency_penalty"], presence=penalties["presence_penalty"],
                    seed=secrets.randbits(32) if req.seed is None else req.seed, stop_tokens=tuple(stop_tokens),
                    stop_strings=tuple(stops) + (template.stop_strings if template else ()),
                    strip_leading=bool(template) and not template.role_tokens)
