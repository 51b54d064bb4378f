"""Refuse request bodies over a size limit with 413, before the app parses them.

A declared Content-Length over the limit is refused at once; a body without one is read up
to the limit and refused if it goes on.
"""

from __future__ import annotations

from gptjax.serve.api_errors import ApiError


class BodyLimit:
    """ASGI middleware: bodies over `max_bytes` get OpenAI's error shape with status 413."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(scope, receive, send)
        if declared is not None:
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self.refuse(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def refuse(self, scope, receive, send):
        error = ApiError(413, f"the request body is over this server's limit of {self.max_bytes} bytes",
                         code="request_too_large")
        await error.response()(scope, receive, send)
