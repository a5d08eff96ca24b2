"""A local answer, dressed exactly as the request's dialect would send it: JSON or an event stream."""

from __future__ import annotations

from types import ModuleType

from starlette.responses import Response

from finch.dialects.common import ParsedRequest


def local_response(
    dialect: ModuleType, request: ParsedRequest, answer: str, usage: tuple[int, int], request_id: str
) -> Response:
    headers = {"x-finch-source": "local", "x-finch-request-id": request_id, "request-id": request_id}
    body, media_type = dialect.local_body(request, answer, usage)
    return Response(body, media_type=media_type, headers=headers)
