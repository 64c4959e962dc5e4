"""Serve a WSGI app on 127.0.0.1 (a free port) in a background thread, for tests.

    with LiveServer(app) as server:
        requests.get(server.url + "/")

Used by the browser tests (the real app on the test harness's database) and by the
local stand-ins for outside services (tests/support/twilio_standin.py).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class LiveServer:
    def __init__(self, wsgi_app: Any, host: str = "127.0.0.1") -> None:
        self.wsgi_app = wsgi_app
        self.host = host
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0  # after the first start: restarts bind the same port (an outage, then recovery)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> LiveServer:
        if self._server is not None:
            return self
        # Port 0 at first: the kernel picks a free port; it is known once the socket is bound.
        self._server = make_server(self.host, self._port, self.wsgi_app, threaded=True)
        self._port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"live-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
