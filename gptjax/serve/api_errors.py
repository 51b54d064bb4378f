"""Errors as OpenAI's clients expect them: a status and `{"error": {message, type, param, code}}`."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from gptjax.serve.schemas import ErrorBody, ErrorDetail

def error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = ErrorBody(error=ErrorDetail(message=self.message, type=error_type(self.status),
                                           param=self.param, code=self.code))
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """400: the request asks for something this server refuses."""
    return ApiError(400, message, param, code)
