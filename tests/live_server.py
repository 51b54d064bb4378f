"""A real uvicorn server on 127.0.0.1 (a free port) in a thread, for clients that need a socket."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn


@contextlib.contextmanager
def serving(app):
    """Yield the base URL of `app` served on 127.0.0.1 until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def slowed(monkeypatch, seconds: float) -> None:
    """Make every call of the serving decode loop take at least `seconds`, so replies stream slowly."""
    from gptjax.serve import batch_decode

    fast = batch_decode.advance

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return fast(*args, **kwargs)

    monkeypatch.setattr(batch_decode, "advance", slow)


def wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
