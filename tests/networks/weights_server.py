"""A real HTTP server on 127.0.0.1 (random port, one thread per request) that serves files like the Hugging Face
CDN: ``Range: bytes=N-`` gives 206 with ``Content-Range``. Per file it can misbehave in the ways a download
meets in practice (drop the connection mid-file, stall, answer 404 or an HTML page, hold the body until
released, omit the length), and it records every request so tests can see what the client did."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTML_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please log in</body></html>\n"


@dataclass
class Served:
    """What the server does for one file name. ``mode``: ok, drop_once (first full GET sends half the bytes
    and closes), stall (headers, then nothing until the test ends), 404, html (an HTML page with 200),
    html_octet (an HTML page labelled application/octet-stream), hold (body waits for ``release``),
    drop_always (every response stops after 1 MB),
    no_length (close-delimited body without Content-Length)."""

    data: bytes
    mode: str = "ok"
    dropped: bool = False


@dataclass
class ServerState:
    files: dict = field(default_factory=dict)               # name -> Served
    requests: list = field(default_factory=list)            # (path, Range header or None)
    first_get: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def full_gets(self, name: str) -> int:
        """GET requests for ``name`` without a Range header (a download from byte 0)."""
        return sum(1 for p, r in self.requests if p.lstrip("/").split("?")[0] == name and r is None)

    def ranges(self, name: str) -> list[str]:
        return [r for p, r in self.requests if p.lstrip("/").split("?")[0] == name and r is not None]


def make_handler(state: ServerState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            name = self.path.lstrip("/").split("?")[0]
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.path, rng))
            state.first_get.set()
            served = state.files.get(name)
            if served is None or served.mode == "404":
                return self._reply(404, b"Entry not found", "text/plain")
            if served.mode in ("html", "html_octet"):
                ctype = "text/html; charset=utf-8" if served.mode == "html" else "application/octet-stream"
                return self._reply(200, HTML_PAGE, ctype)
            data, start = served.data, 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m:
                start = int(m.group(1))
                if start >= len(data):
                    return self._reply(416, b"", "text/plain")
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if served.mode == "no_length":
                self.send_header("Connection", "close")
                self.end_headers()
                self._write(data[start:])
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if served.mode == "stall":
                state.release.wait(30)
                self.close_connection = True
                return
            if served.mode == "hold":
                state.release.wait(30)
            if served.mode == "drop_once" and not served.dropped and start == 0:
                served.dropped = True
                self._write(data[: len(data) // 2])
                self.close_connection = True  # the client sees a short body: an IncompleteRead
                return
            if served.mode == "drop_always":  # a connection that never lasts: 1 MB per request
                self._write(data[start:start + (1 << 20)])
                self.close_connection = True
                return
            self._write(data[start:])

        def _write(self, payload: bytes) -> None:
            try:
                self.wfile.write(payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (disk full, timeout)
                self.close_connection = True

        def _reply(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._write(body)

    return Handler


class WeightsServer:
    """``with WeightsServer() as srv:`` serves ``srv.state.files`` at ``srv.url``."""

    def __init__(self):
        self.state = ServerState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "WeightsServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.state.release.set()  # let stalled handlers finish
        self.httpd.shutdown()
        self.httpd.server_close()
