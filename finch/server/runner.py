"""Running an ASGI app with uvicorn: in the foreground (``finch serve``) or on a background thread
(tests, ``finch demo``, benchmarks), always on an explicit host and port, behind the edge's limits
(finch/server/edge.py), from the settings given or the defaults."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from finch.config import Settings
from finch.server.edge import guarded_protocol


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def uvicorn_config(
    app: ASGIApp, host: str, port: int, log_level: str = "warning", settings: Settings | None = None
) -> uvicorn.Config:
    settings = settings or Settings()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # the request log is finch's own, written off the request path
        server_header=False,  # relay the upstream's own server and date headers
        date_header=False,
        loop="auto",
        http=guarded_protocol(settings),
        timeout_keep_alive=settings.keep_alive_timeout,
        lifespan="on",
    )


def serve_forever(
    app: ASGIApp, host: str, port: int, log_level: str = "info", settings: Settings | None = None
) -> None:
    uvicorn.Server(uvicorn_config(app, host, port, log_level, settings)).run()


class ServerThread:
    """A uvicorn server on a daemon thread with its own event loop; ``stop`` shuts it down cleanly."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int | None = None, settings: Settings | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(app, self.host, self.port, settings=settings))
        self.thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self, timeout: float = 20.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} failed to start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start within {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def running(
    app: ASGIApp, host: str = "127.0.0.1", port: int | None = None, settings: Settings | None = None
) -> Iterator[ServerThread]:
    server = ServerThread(app, host, port, settings).start()
    try:
        yield server
    finally:
        server.stop()
