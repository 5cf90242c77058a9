"""The control socket: ``vmm run --api-socket PATH`` (QMP's and Firecracker's API in spirit).

A UNIX stream socket; each request is one JSON object on one line, each answer one JSON
object on one line::

    {"cmd": "status"}                     -> {"ok": true, "state": "running", "uptime": 1.2, "vcpus": [...]}
    {"cmd": "pause"} / {"cmd": "resume"}  -> {"ok": true}
    {"cmd": "stats"}                      -> {"ok": true, "stats": {"exits": 123, ...}}
    {"cmd": "snapshot", "to": "FILE"}     -> {"ok": true, "path": ..., "bytes": ..., "seconds": ...}
    {"cmd": "shutdown"}                   -> {"ok": true}   (as SIGTERM: Xen guests are asked first)
    anything else                         -> {"ok": false, "error": "one line"}

The ``api-server`` thread accepts connections; each is served by an ``api-client`` thread of
its own (a client may send several requests on one connection, and an idle one blocks no
other); the commands run there, the machine's control lock (``vm.control``, ARCHITECTURE.md)
serialising pause/resume/snapshot.  The socket file is
removed when the server stops.  :func:`request` is the client side (``vmm ctl``,
``vmm snapshot``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Callable

from vmm.errors import internal_error
from vmm.trace_events import TP_API_REQUEST

MAX_LINE = 1 << 16


class ApiError(Exception):
    """A request that can't be served (one line, sent back as {"ok": false, "error": ...})."""


Handler = Callable[[dict], dict | None]


class ApiServer:
    def __init__(self, path: str, handlers: dict[str, Handler]):
        self.path = path
        self.handlers = handlers
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(path) and _is_socket(path):
                os.unlink(path)                 # a stale socket of an earlier run
            self._sock.bind(path)
        except OSError as e:
            self._sock.close()
            raise ApiError(f"--api-socket: cannot listen on {path}: {e.strerror}") from None
        self._sock.listen(4)
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name="api-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return                          # closed by stop()
            threading.Thread(target=self._client, args=(conn,), name="api-client", daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._connection(conn)
        except OSError:
            pass                                # the client went away
        except Exception as e:  # noqa: BLE001 - a VMM bug: reported, the server goes on
            internal_error("api-client", e)

    def _connection(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        while True:
            line = f.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                f.write(_encode({"ok": False, "error": f"request longer than {MAX_LINE} bytes"}))
                f.flush()
                return
            if not line.strip():
                continue
            f.write(_encode(self.handle_line(line)))
            f.flush()

    def handle_line(self, line: bytes) -> dict:
        cmd = "?"
        try:
            try:
                req = json.loads(line)
            except (ValueError, UnicodeDecodeError) as e:
                raise ApiError(f"not JSON: {e}") from None
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ApiError('a request is a JSON object with a "cmd" string')
            cmd = req["cmd"]
            handler = self.handlers.get(cmd)
            if handler is None:
                raise ApiError(f"unknown command {cmd!r} (commands: {', '.join(sorted(self.handlers))})")
            answer = {"ok": True, **(handler(req) or {})}
        except ApiError as e:
            answer = {"ok": False, "error": str(e)}
        if TP_API_REQUEST.enabled:
            TP_API_REQUEST.emit(cmd=cmd, ok=int(answer["ok"]), detail=answer.get("error", ""))
        return answer


def _encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _is_socket(path: str) -> bool:
    import stat
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def request(path: str, req: dict, timeout: float = 120.0) -> dict:
    """One request to the server at ``path``; its answer.  OSError if there is none."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(_encode(req))
        f = s.makefile("rb")
        line = f.readline(MAX_LINE * 16)
    if not line:
        raise ConnectionError(f"{path}: the VMM closed the connection without an answer")
    return json.loads(line)


__all__ = ["ApiError", "ApiServer", "request"]
