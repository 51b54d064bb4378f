"""The OpenAI-compatible server: validation, streaming, choices, stops, batching, disconnects, clients."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jax
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from openai.types import Completion as OpenAICompletion
from openai.types.chat import ChatCompletion as OpenAIChatCompletion, ChatCompletionChunk

from gptjax.serve.app import create_app
from gptjax.serve.engine import Engine, Failed, Finished, Job, Piece, Sampling
from live_server import serving, slowed, wait_until

# One compiled shape for every test: 4 rows, prompts padded to the whole context, and room for
# 64 new tokens (a batch has room for twice the 32 a request may ask, for others to join it).
SHAPES = dict(max_batch=4, max_tokens=32, shape_floors=(4, 64, 64))
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Speak"}]}


@pytest.fixture(scope="module")
def model(chat_workdir):
    from gptjax.workdir import load_model

    return load_model(chat_workdir)[:2]


def engine(model, **options) -> Engine:
    return Engine("tiny", *model, **{**SHAPES, **options})


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app({"tiny": engine(model)})) as c:
        yield c


def post(client, path: str, **body) -> dict:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def refusal(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


def test_models_health_and_the_page(client):
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]
    assert client.get("/health").json()["models"]["tiny"]["running"] == 0
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html") and 'id="persona"' in page.text
    for path in ("/", "/app.js", "/style.css"):  # everything ships with the package: no CDN
        assert "://" not in client.get(path).text


@pytest.mark.parametrize("changes, param", [
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 33}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"stop": ["a", ""]}, "stop"),
    ({"messages": []}, "messages"),
    ({"messages": "Speak"}, "messages"),
    ({"messages": [{"content": "Speak"}]}, "messages.0.role"),
    ({"messages": [{"role": "wizard", "content": "Speak"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "Speak " * 40}]}, "max_tokens"),
])
def test_invalid_chat_requests_get_400_naming_the_parameter(client, changes, param):
    error = refusal(client.post("/v1/chat/completions", json={**CHAT, **changes}), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_other_refusals_have_their_status(client, model):
    assert refusal(client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}), 404)["code"] == \
        "model_not_found"
    assert refusal(client.post("/v1/completions", json={"model": "tiny", "prompt": "Speak " * 40}),
                   400)["code"] == "context_length_exceeded"
    assert "JSON" in refusal(client.post("/v1/completions", content=b"{not json",
                                         headers={"content-type": "application/json"}), 400)["message"]
    refusal(client.get("/v1/nothing"), 404)
    with TestClient(create_app({"tiny": engine(model, max_queue=0)})) as busy:
        r = busy.post("/v1/chat/completions", json=CHAT)
        assert refusal(r, 429)["code"] == "queue_full" and r.headers["retry-after"] == "1"


def test_an_api_key_is_required_when_set():
    with TestClient(create_app({}, api_key="secret")) as c:
        assert refusal(c.get("/v1/models"), 401)["code"] == "invalid_api_key"
        assert refusal(c.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        assert c.get("/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 200
        assert c.get("/health").status_code == 200


def test_bodies_over_the_limit_get_413_with_or_without_a_length():
    with TestClient(create_app({}, max_body=100)) as c:
        refusal(c.post("/v1/completions", content=b"x" * 101, headers={"content-type": "application/json"}), 413)
        chunked = (b"x" * 60 for _ in range(2))
        refusal(c.post("/v1/completions", content=chunked, headers={"content-type": "application/json"}), 413)
        assert c.post("/v1/completions", content=b"{}", headers={"content-type": "application/json"}).status_code == 400


def sse_payloads(text: str) -> list[str]:
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


def test_stream_chunks_parse_as_openai_and_add_up_to_the_completion(client):
    body = {**CHAT, "seed": 3, "max_tokens": 12}
    whole = OpenAIChatCompletion.model_validate(post(client, "/v1/chat/completions", **body))
    r = client.post("/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(p)) for p in payloads[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_n_choices_are_different_samples_of_the_same_prompt(client):
    body = post(client, "/v1/completions", model="tiny", prompt="First", n=3, max_tokens=10, seed=4,
                temperature=1.0)
    done = OpenAICompletion.model_validate(body)
    assert [c.index for c in done.choices] == [0, 1, 2]
    assert len({c.text for c in done.choices}) > 1
    assert done.usage.prompt_tokens >= 1 and done.usage.completion_tokens == 30  # the tiny model never stops


def test_stop_strings_cut_the_text_and_length_ends_with_length(client):
    greedy = dict(model="tiny", prompt="First Citizen", temperature=0, max_tokens=20)
    full = post(client, "/v1/completions", **greedy)["choices"][0]
    assert full["finish_reason"] == "length"
    text = full["text"]
    stop = text[4:6]
    assert len(text) > 6 and stop
    cut = post(client, "/v1/completions", **greedy, stop=[stop, "never seen"])
    assert cut["choices"][0] == {**full, "text": text[:text.find(stop)], "finish_reason": "stop"}
    assert cut["usage"]["completion_tokens"] < 20
    short = post(client, "/v1/completions", **{**greedy, "max_tokens": 5})
    assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 5


def test_penalties_change_what_is_sampled(client):
    """On a barely trained model one seed's sample may never repeat a token; over a few seeds
    penalised samples must differ from plain ones somewhere, or the penalties are ignored."""
    def texts(**penalties):
        return [post(client, "/v1/completions", model="tiny", prompt="First", max_tokens=32, seed=seed,
                     **penalties)["choices"][0]["text"] for seed in range(4)]

    assert texts() != texts(frequency_penalty=2, presence_penalty=2)


async def decode(e: Engine, requests: list[tuple[str, Sampling]], start_after: int = 0) -> list[tuple[str, str]]:
    """Text and finish reason of each request; each after the first is submitted once the first
    has produced `start_after` pieces (0: all at once)."""
    queues = [asyncio.Queue() for _ in requests]
    jobs = [Job(e.generator.encode(p), s, q) for (p, s), q in zip(requests, queues)]
    e.submit(jobs[0])
    out = [["", ""] for _ in jobs]

    async def drain(i: int, wait_for: int = 0):
        pieces = 0
        while not out[i][1] and pieces < (wait_for or 10**9):
            event = await queues[i].get()
            if isinstance(event, Piece):
                out[i][0] += event.text
                pieces += 1
            elif isinstance(event, Finished):
                out[i][1] = event.reason
            else:
                raise AssertionError(event.message)

    if start_after:
        await drain(0, start_after)
    for job in jobs[1:]:
        e.submit(job)
    await asyncio.gather(*(drain(i) for i in range(len(jobs))))
    return [tuple(o) for o in out]


def test_a_rows_key_is_the_seed_folded_with_its_choice_over_the_whole_seed_range():
    from gptjax.serve.engine import row_key

    for seed in (0, 7, 2**31 - 1, 2**31, 2**32 - 1, 2**32 + 7, 2**40):
        for choice in (0, 3):
            want = jax.random.fold_in(jax.random.PRNGKey(seed % 2**32), choice)
            np.testing.assert_array_equal(row_key(seed, choice), np.asarray(want))
    assert (row_key(7, 0) == row_key(2**32 + 7, 0)).all() and (row_key(7, 0) != row_key(7, 1)).any()


def test_requests_decoded_together_match_each_alone(model, monkeypatch):
    from gptjax.serve import batch_decode

    live_rows, calls, advance, insert = [], [], batch_decode.advance, batch_decode.insert

    def counting(graphdef, params, st, leaving, *args, **kwargs):
        live_rows.append(int(np.sum(~(np.asarray(st.done) | leaving))))
        time.sleep(0.05)  # slow enough for b to join a mid-way
        return advance(graphdef, params, st, leaving, *args, **kwargs)

    def inserting(*args, **kwargs):
        calls.append("insert")
        return insert(*args, **kwargs)

    monkeypatch.setattr(batch_decode, "advance", counting)
    monkeypatch.setattr(batch_decode, "insert", inserting)
    e = engine(model, chunk=2)
    prefill = e.prefill
    e.prefill = lambda rows: calls.append("prefill") or prefill(rows)
    try:
        a = ("First", Sampling(max_new=24, seed=1))
        b = ("Speak, speak", Sampling(max_new=16, seed=2, temperature=0.7, presence=0.5))
        c = ("All", Sampling(max_new=12, seed=3, top_p=0.8))
        alone = [asyncio.run(decode(e, [r]))[0] for r in (a, b, c)]
        assert len(set(alone)) == 3 and max(live_rows) == 1
        assert asyncio.run(decode(e, [a, b])) == alone[:2]
        assert max(live_rows) == 2  # they shared the decode loop
        idle = lambda: wait_until(lambda: e.stats()["running"] == 0)  # noqa: E731 - else a joins the last batch
        assert idle()
        live_rows.clear(), calls.clear()
        assert asyncio.run(decode(e, [a, b, c], start_after=2)) == alone  # b and c join while a is decoding
        assert live_rows[0] == 1 and max(live_rows) == 3
        assert calls[0] == "prefill" and calls.count("prefill") == 1 and "insert" in calls  # a was not again
        assert idle()
        live_rows.clear(), calls.clear()
        e.slots_to_drop = lambda batch, joining: None  # as when the batch has no room left for b's tokens
        assert asyncio.run(decode(e, [a, b], start_after=2)) == alone[:2]
        assert calls == ["prefill", "prefill"] and max(live_rows) == 2  # both prefilled again, together
        assert wait_until(lambda: e.stats()["running"] == 0)
    finally:
        e.close()


def test_each_call_of_the_loop_starts_before_the_host_reads_the_one_before(model, monkeypatch):
    from gptjax.serve import batch_decode, engine as engine_lib

    events, advance, read = [], batch_decode.advance, engine_lib.Snapshot.of
    monkeypatch.setattr(batch_decode, "advance", lambda *a, **k: events.append("call") or advance(*a, **k))
    monkeypatch.setattr(engine_lib.Snapshot, "of", lambda view: events.append("read") or read(view))
    e = engine(model, chunk=2)
    try:
        assert asyncio.run(decode(e, [("First", Sampling(max_new=24, seed=1))]))[0][1] == "length"
        assert wait_until(lambda: e.stats()["running"] == 0)  # the thread reads on after the request ends
        # 12 calls of 2 tokens, each started before the last one's tokens are read, then one more
        # that the host starts before it reads that the row is done (it decodes nothing)
        assert events == ["call"] + ["call", "read"] * 12 + ["read"]
    finally:
        e.close()


def test_a_joining_request_takes_a_free_row_only_where_its_context_and_tokens_fit(model):
    from types import SimpleNamespace

    e = engine(model)
    try:
        # a new request of a 2-token context (padded to 8 cache slots) and 16 tokens to generate
        joining = [SimpleNamespace(job=SimpleNamespace(sampling=Sampling(max_new=16)), ids=[],
                                   context=lambda block: np.zeros(2, np.int32))]
        layout = SimpleNamespace(batch=4, window=64, new=32, sliding=False)
        def running(generated: int, index: int, free: int, first: int = 0):
            rows = [None] * free + [SimpleNamespace(finished=False)] * (4 - free)
            return SimpleNamespace(rows=rows, layout=layout, host=SimpleNamespace(
                length=64 + generated, index=index, first_slot=np.full(4, first)))
        drop = e.slots_to_drop
        assert drop(running(generated=16, index=80, free=1), joining) == 0
        assert drop(running(generated=16, index=80, free=0), joining) is None  # no free row
        # 17 + 16 tokens > room for 32: one slot must go, and every live row still sees slot 0
        assert drop(running(generated=17, index=81, free=1), joining) is None
        assert drop(running(generated=17, index=81, free=1, first=5), joining) == 1
        assert drop(running(generated=30, index=94, free=1, first=40), joining) == 14
        assert drop(running(generated=0, index=7, free=1), joining) is None    # 7 cache slots before the index
        assert drop(running(generated=0, index=8, free=2), joining * 2) == 0
        assert drop(running(generated=0, index=8, free=1), joining * 2) is None
    finally:
        e.close()


def test_a_long_lived_batch_drops_slots_nobody_sees_for_rows_that_join_it(model, monkeypatch):
    from gptjax.serve import batch_decode

    calls, advance = [], batch_decode.advance
    for name in ("insert", "drop"):
        def counting(*args, _name=name, _fn=getattr(batch_decode, name), **kwargs):
            calls.append(_name)
            return _fn(*args, **kwargs)
        monkeypatch.setattr(batch_decode, name, counting)
    monkeypatch.setattr(batch_decode, "advance", lambda *a, **k: time.sleep(0.05) or advance(*a, **k))
    e = engine(model, chunk=2)
    prefill = e.prefill
    e.prefill = lambda rows: calls.append("prefill") or prefill(rows)
    requests = [("First", Sampling(max_new=32, seed=1)), ("Speak", Sampling(max_new=32, seed=2)),
                ("All", Sampling(max_new=32, seed=3, temperature=0.5))]

    async def chained() -> list[str]:
        """Each request is sent once the one before it has streamed 12 pieces (24 tokens)."""
        queues = [asyncio.Queue() for _ in requests]
        texts = ["" for _ in requests]
        async def drain(i: int, pieces: int | None = None):
            while True:
                event = await queues[i].get()
                if isinstance(event, Failed):
                    raise AssertionError(event.message)
                if isinstance(event, Finished):
                    return
                texts[i] += event.text
                if pieces is not None and (pieces := pieces - 1) == 0:
                    return
        tasks = []
        for i, (prompt, sampling) in enumerate(requests):
            e.submit(Job(e.generator.encode(prompt), sampling, queues[i]))
            if i + 1 < len(requests):
                await drain(i, 12)
            tasks.append(asyncio.create_task(drain(i)))
        await asyncio.gather(*tasks)
        return texts

    try:
        alone = []
        for r in requests:
            requests_now, requests[:] = list(requests), [r]
            alone += asyncio.run(chained())
            requests[:] = requests_now
        assert wait_until(lambda: e.stats()["running"] == 0)  # the next request starts a batch of its own
        calls.clear()
        assert asyncio.run(chained()) == alone
        # the third joins after 48 tokens, more than its 32 leave room for in 64: the batch drops
        # the slots before the second request's first, and nobody is prefilled again
        assert calls == ["prefill", "insert", "drop", "insert"]
    finally:
        e.close()


@pytest.fixture(scope="module")
def live(model):
    """A real server (API key "k") whose engine decodes 2 tokens at a time, and its engine."""
    e = engine(model, chunk=2)
    with serving(create_app({"tiny": e}, api_key="k")) as url:
        yield url, e


def test_a_client_that_disconnects_stops_its_generation(live, monkeypatch):
    url, e = live
    slowed(monkeypatch, 0.1)
    before = e.stats()["generated_tokens"]
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True, "max_tokens": 32}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():  # hang up after the first piece of text
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break
        assert wait_until(lambda: e.stats()["running"] == 0, timeout=10)
        stopped_at = e.stats()["generated_tokens"]
        assert stopped_at - before < 32
        assert post_ok(http)  # the slot is free for the next request


def post_ok(http: httpx.Client) -> bool:
    """A request is served to its end (the chat model may end its reply before 4 tokens)."""
    r = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})
    return r.status_code == 200 and 1 <= r.json()["usage"]["completion_tokens"] <= 4 \
        and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_the_openai_client_round_trip(live):
    url, _ = live
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    ask = dict(model="tiny", messages=CHAT["messages"], max_tokens=10, seed=7, temperature=0.9)
    whole = client.chat.completions.create(**ask)
    assert whole.choices[0].finish_reason in ("stop", "length") and whole.usage.completion_tokens <= 10
    stream = client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    text = client.completions.create(model="tiny", prompt="First", max_tokens=6, seed=1)
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="tiny", prompt="First",
                                                                              max_tokens=6, seed=1, stream=True))
    assert streamed == text.choices[0].text and text.usage.completion_tokens == 6
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**{**ask, "model": "nope"})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**{**ask, "temperature": -1})
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()


def test_two_workdirs_of_one_name_are_refused_before_loading(tmp_path):
    from gptjax.errors import UserError
    from gptjax.serve.engine import load_engines

    with pytest.raises(UserError, match="both named 'x'"):
        load_engines([str(tmp_path / "a" / "x"), str(tmp_path / "b" / "x")])


def test_the_command_refuses_a_workdir_without_a_model(tmp_path, capsys):
    from gptjax.cli.serve import main

    with pytest.raises(SystemExit) as exit_:
        main(["--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_a_served_workdir_renders_chats_with_the_template_it_was_trained_with(chat_workdir, tmp_path):
    """A model fine-tuned with the plain template is served with it, though its tokenizer has role tokens."""
    import shutil

    from gptjax.data.chat_template import CHAT_RECORD
    from gptjax.serve.engine import load_engines

    workdir = tmp_path / "tiny"
    shutil.copytree(chat_workdir, workdir)
    assert load_engines([str(workdir)])["tiny"].template.role_tokens  # no record: what the tokenizer allows
    (workdir / CHAT_RECORD).write_text(json.dumps({"template": "plain"}))
    assert not load_engines([str(workdir)])["tiny"].template.role_tokens
