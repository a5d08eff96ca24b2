"""finch's errors, and their Anthropic-shaped rendering.

    FinchError
    ├── ConfigError            bad settings; raised at start-up, never on the request path
    └── ApiError               anything a client sees as an HTTP error
        ├── InvalidRequest     400 invalid_request_error (bad JSON, missing fields)
        ├── Unauthorized       401 authentication_error (missing finch client token)
        ├── NotFound           404 not_found_error
        ├── RequestTooLarge    413 request_too_large
        ├── ClientGone         499 client_closed_request (went away, or was timed out, mid-body)
        ├── UpstreamUnreachable  502 api_error (connect failures after retries)
        └── UpstreamTimeout    504 timeout_error

Errors are translated once, at the server boundary, by ``error_body``.
"""

from __future__ import annotations

import json


class FinchError(Exception):
    """Base of every error finch raises on purpose."""


class ConfigError(FinchError):
    """The settings cannot be used."""


class ApiError(FinchError):
    status = 500
    error_type = "api_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> bytes:
        return error_body(self.error_type, self.message)


class InvalidRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"


class Unauthorized(ApiError):
    status = 401
    error_type = "authentication_error"


class NotFound(ApiError):
    status = 404
    error_type = "not_found_error"


class RequestTooLarge(ApiError):
    status = 413
    error_type = "request_too_large"


class ClientGone(ApiError):
    """Logged, never sent: nobody is left to read it (nginx's 499)."""

    status = 499
    error_type = "client_closed_request"


class UpstreamUnreachable(ApiError):
    status = 502
    error_type = "api_error"


class UpstreamTimeout(ApiError):
    status = 504
    error_type = "timeout_error"


def error_body(error_type: str, message: str) -> bytes:
    """The JSON body the Messages API uses for errors."""
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


def sse_error_event(error_type: str, message: str) -> bytes:
    """An SSE ``error`` event, as the Messages API sends when a stream fails midway."""
    data = json.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return f"event: error\ndata: {data}\n\n".encode()
