"""The chat page in headless Chromium against a real server: stream, persona, stop, new chat, phone width."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from gptjax.serve.app import create_app
from gptjax.serve.engine import Engine
from live_server import serving, slowed, wait_until

CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

@pytest.fixture(scope="module")
def served(chat_workdir):
    """A server whose engine slides the window (the page keeps the whole history) and streams
    one token per decode call."""
    from gptjax.workdir import load_model

    model, tokenizer, _ = load_model(chat_workdir)
    e = Engine("tiny", model, tokenizer, max_batch=4, max_tokens=32, chunk=1, overflow="sliding",
               shape_floors=(4, 64, 64))
    with serving(create_app({"tiny": e})) as url:
        warm = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.8, "top_p": 0.95}
        assert httpx.post(f"{url}/v1/chat/completions", json=warm, timeout=600).status_code == 200  # compile first
        yield url, e


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):  # a failure, not a skip: a missing browser must not pass for a tested page
        pytest.fail(f"the browser test needs Debian's chromium at {CHROMIUM}: apt-get install chromium "
                    "(.ci/run installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def watch_replies(page) -> None:
    """Record, in window.lengths, the newest reply's length each time the history changes (a
    browser short of CPU may apply several pieces at once, so the count of changes is not fixed)."""
    page.evaluate("""() => { window.lengths = [];
        new MutationObserver(() => {
            const replies = document.querySelectorAll('#history li.assistant');
            if (replies.length) window.lengths.push(replies[replies.length - 1].textContent.length); })
          .observe(document.getElementById('history'), {subtree: true, childList: true, characterData: true}); }""")


def send(page, text: str) -> dict:
    """Type and send a message; the chat request's body."""
    with page.expect_request("**/v1/chat/completions") as request:
        page.fill("#message", text)
        page.press("#message", "Enter")
    return json.loads(request.value.post_data)


def last_reply(page) -> str:
    return page.locator("#history li.assistant").last.inner_text()


def test_chat_page_streams_keeps_the_persona_stops_and_starts_over(served, browser, monkeypatch):
    url, engine = served
    slowed(monkeypatch, 0.02)
    page = browser.new_page(viewport={"width": 900, "height": 800})
    page.goto(url)
    page.wait_for_function("document.querySelector('#model').value === 'tiny'")
    page.fill("#persona", "You are terse.")
    watch_replies(page)

    first = send(page, "Speak")
    assert first["stream"] and first["model"] == "tiny"
    assert first["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Speak"}]
    page.wait_for_selector("#stop:disabled", timeout=60_000)
    final = len(page.evaluate("document.querySelectorAll('#history li.assistant')[0].textContent"))
    seen = [n for n in page.evaluate("window.lengths") if n]
    assert last_reply(page).strip() and min(seen) < final  # the reply was shown in part before it was whole

    page.fill("#persona", "You are a poet.")
    second = send(page, "Again")
    assert second["messages"][0] == {"role": "system", "content": "You are a poet."}
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    page.wait_for_selector("#stop:disabled", timeout=60_000)

    slowed(monkeypatch, 0.3)  # a long reply, stopped after its first pieces
    send(page, "Go on")
    page.wait_for_function("document.querySelectorAll('#history li.assistant')[2].textContent.length > 0",
                           timeout=60_000)
    page.click("#stop")
    page.wait_for_selector("#send:enabled")
    assert page.inner_text("#status") == "stopped"
    shown = last_reply(page)
    assert wait_until(lambda: engine.stats()["running"] == 0, timeout=10)  # the server let it go
    page.wait_for_timeout(700)
    assert last_reply(page) == shown

    slowed(monkeypatch, 0.0)
    page.click("#new-chat")
    assert page.locator("#history li").count() == 0
    fresh = send(page, "Hello")
    assert [m["role"] for m in fresh["messages"]] == ["system", "user"]
    page.wait_for_selector("#stop:disabled", timeout=60_000)
    page.close()


def test_the_page_fits_a_phone(served, browser):
    url, _ = served
    page = browser.new_page(viewport={"width": 360, "height": 740})
    page.goto(url)
    page.wait_for_function("document.querySelector('#model').value === 'tiny'")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for control in ("#message", "#send", "#stop", "#new-chat", "#persona", "#temperature", "#top-p", "#model"):
        box = page.locator(control).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360, control
    page.close()
