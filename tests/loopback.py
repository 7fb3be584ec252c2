"""Starting and stopping the stand-ins' HTTP servers (each a pair: an API host and a storage host)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(servers: tuple[ThreadingHTTPServer, ...]) -> list[threading.Thread]:
    """Serve each in a daemon thread (polling every 20 ms, so stop is quick)."""
    threads = []
    for httpd in servers:
        thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def shut(servers: tuple[ThreadingHTTPServer, ...], started: bool) -> None:
    """Stop serving and close the sockets: afterwards nothing listens on their ports."""
    for httpd in servers:
        if started:
            httpd.shutdown()
        httpd.server_close()


def listener(
    host: str, port: int, dispatch: Callable[[BaseHTTPRequestHandler], None]
) -> ThreadingHTTPServer:
    """An HTTP/1.1 server on ``host:port`` (0: ephemeral) handing every GET, POST and HEAD
    to ``dispatch``, quietly."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            dispatch(self)

        def do_POST(self) -> None:
            dispatch(self)

        def do_HEAD(self) -> None:
            dispatch(self)

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    return httpd
