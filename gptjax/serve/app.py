"""The FastAPI app: OpenAI's routes over the engines, server-sent events, and the chat page.

Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health, and
the page at GET / (its files ship in gptjax/serve/static; nothing is read from a path a
request names). Every error is a JSON body in OpenAI's shape, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from importlib import resources
from typing import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from gptjax.serve import jobs
from gptjax.serve.api_errors import ApiError, bad
from gptjax.serve.body_limit import BodyLimit
from gptjax.serve.engine import Engine, Failed, Finished, Job, Piece, QueueFull
from gptjax.serve.schemas import (ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, ChatMessage, ChatRequest,
                                  CompletionRequest, Delta, ModelCard, ModelList, TextChoice, TextCompletion, Usage)

PAGE_FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}
DISCONNECT_POLL_S = 0.5


def create_app(engines: dict[str, Engine], api_key: str | None = None, max_body: int = 1 << 20,
               retry_after_s: int = 1) -> FastAPI:
    """The server over these engines; with api_key, /v1 needs `Authorization: Bearer <key>`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for engine in engines.values():
            engine.close()

    app = FastAPI(title="gptjax", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_body)
    app.state.engines = engines

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        if first.get("type") == "json_invalid":
            return bad("the body is not valid JSON").response()
        return bad(f"{where or 'the body'}: {first.get('msg', 'is invalid')}", where).response()

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return ApiError(e.status_code, str(e.detail), code=None).response()

    @app.exception_handler(Exception)
    async def crashed(_: Request, e: Exception) -> JSONResponse:
        return ApiError(500, f"the server failed on this request ({type(e).__name__})").response()

    def authorized(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "a valid API key is needed: send the header Authorization: Bearer <key>",
                           code="invalid_api_key")

    def engine(name: str) -> Engine:
        if name not in engines:
            raise ApiError(404, f"model {name!r} does not exist; GET /v1/models lists the models served",
                           "model", "model_not_found")
        return engines[name]

    v1 = [Depends(authorized)]

    @app.get("/v1/models", dependencies=v1)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=n, created=e.created) for n, e in engines.items()])

    @app.post("/v1/chat/completions", dependencies=v1)
    async def chat(req: ChatRequest, request: Request) -> Response:
        e = engine(req.model)
        prompt = jobs.chat_prompt(req, e)
        run = Run(e, [prompt], jobs.sampling(req, e, len(prompt), chat=True), retry_after_s)
        if req.stream:
            return sse(run.chat_chunks(req.model, include_usage(req)))
        await run.wait(request)
        choices = [ChatChoice(index=i, message=ChatMessage(content=t), finish_reason=r)
                   for i, (t, r) in enumerate(zip(run.texts, run.reasons))]
        return JSONResponse(ChatCompletion(id=run.id("chatcmpl"), created=run.created, model=req.model,
                                           choices=choices, usage=run.usage()).model_dump())

    @app.post("/v1/completions", dependencies=v1)
    async def complete(req: CompletionRequest, request: Request) -> Response:
        e = engine(req.model)
        prompts = jobs.completion_prompts(req, e)
        run = Run(e, prompts, jobs.sampling(req, e, max(map(len, prompts)), chat=False), retry_after_s)
        if req.stream:
            return sse(run.text_chunks(req.model, include_usage(req)))
        await run.wait(request)
        choices = [TextChoice(index=i, text=t, finish_reason=r) for i, (t, r) in enumerate(zip(run.texts, run.reasons))]
        return JSONResponse(TextCompletion(id=run.id("cmpl"), created=run.created, model=req.model,
                                           choices=choices, usage=run.usage()).model_dump())

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": {n: e.stats() for n, e in engines.items()}}

    page = {route: (resources.files("gptjax.serve").joinpath("static", name).read_bytes(), kind)
            for route, (name, kind) in PAGE_FILES.items()}

    def serve_file(route: str):
        body, kind = page[route]
        return lambda: Response(body, media_type=kind)

    for route in page:
        app.get(route, include_in_schema=False)(serve_file(route))
    return app


def include_usage(req) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def sse(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class Run:
    """One request's jobs on an engine, and the text, reasons and token counts they produce."""

    def __init__(self, engine: Engine, prompts, sampling, retry_after_s: int):
        self.events: asyncio.Queue = asyncio.Queue()
        n = sampling.n
        self.jobs = [Job(p, sampling, self.events, first_choice=i * n) for i, p in enumerate(prompts)]
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.choices = len(prompts) * n
        self.texts = [""] * self.choices
        self.reasons: list[str | None] = [None] * self.choices
        self.completion_tokens = 0
        self.created = int(time.time())
        self.uid = uuid.uuid4().hex
        try:
            for job in self.jobs:
                engine.submit(job)
        except QueueFull:
            self.cancel()
            raise ApiError(429, f"the server is busy ({engine.max_queue} requests are waiting); retry shortly",
                           code="queue_full", headers={"Retry-After": str(retry_after_s)}) from None

    def id(self, prefix: str) -> str:
        return f"{prefix}-{self.uid}"

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()

    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     total_tokens=self.prompt_tokens + self.completion_tokens)

    def record(self, event) -> None:
        if isinstance(event, Failed):
            raise ApiError(500, event.message)
        if isinstance(event, Piece):
            self.texts[event.choice] += event.text
        else:
            self.reasons[event.choice] = event.reason
            self.completion_tokens += event.tokens

    def finished(self) -> bool:
        return all(r is not None for r in self.reasons)

    async def wait(self, request: Request) -> None:
        """Every choice to its end; a client that hangs up cancels its jobs."""
        try:
            while not self.finished():
                try:
                    self.record(await asyncio.wait_for(self.events.get(), DISCONNECT_POLL_S))
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
        finally:
            self.cancel()

    async def events_until_done(self) -> AsyncIterator:
        """Events as they come; leaving early (a client that hung up) cancels the jobs."""
        try:
            while not self.finished():
                event = await self.events.get()
                if not isinstance(event, Failed):
                    self.record(event)
                yield event
        finally:
            self.cancel()

    async def chat_chunks(self, model: str, usage: bool) -> AsyncIterator[str]:
        def chunk(choices, **extra) -> str:
            body = ChatChunk(id=self.id("chatcmpl"), created=self.created, model=model, choices=choices, **extra)
            return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

        for i in range(self.choices):
            yield chunk([ChatChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
        async for event in self.events_until_done():
            if isinstance(event, Failed):
                yield failure(event)
                return
            delta = Delta(content=event.text) if isinstance(event, Piece) else Delta()
            yield chunk([ChatChunkChoice(index=event.choice, delta=delta,
                                         finish_reason=event.reason if isinstance(event, Finished) else None)])
        if usage:
            yield chunk([], usage=self.usage())
        yield "data: [DONE]\n\n"

    async def text_chunks(self, model: str, usage: bool) -> AsyncIterator[str]:
        def chunk(choices, **extra) -> str:
            body = TextCompletion(id=self.id("cmpl"), created=self.created, model=model, choices=choices, **extra)
            return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

        async for event in self.events_until_done():
            if isinstance(event, Failed):
                yield failure(event)
                return
            piece = event.text if isinstance(event, Piece) else ""
            reason = event.reason if isinstance(event, Finished) else None
            yield chunk([TextChoice(index=event.choice, text=piece, finish_reason=reason)])
        if usage:
            yield chunk([], usage=self.usage())
        yield "data: [DONE]\n\n"


def failure(event: Failed) -> str:
    return f"data: {ApiError(500, event.message).response().body.decode()}\n\n"
