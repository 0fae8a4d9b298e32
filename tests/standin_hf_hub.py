"""A stand-in for the Hugging Face Hub on 127.0.0.1: the file endpoints huggingface_hub calls.

`HEAD|GET /{org}/{name}/resolve/{revision}/{file}` with the headers hf_hub_download reads
(X-Repo-Commit, ETag, Content-Length) and byte ranges (get_safetensors_metadata reads only the
safetensors header). Unknown files answer 404 with X-Error-Code: EntryNotFound, as the Hub does.
Safetensors files are served as their header only: the planner never reads tensor data.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_ELEMENT_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "F8_E4M3": 1, "U8": 1}


def safetensors_header(tensors: Mapping[str, tuple[str, list[int]]]) -> bytes:
    """The first bytes of a .safetensors file: u64 header length + JSON of dtypes, shapes, offsets."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = _ELEMENT_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _lookup(self) -> bytes | None:
        match = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
        if not match:
            return None
        return self.files.get(f"{match.group(1)}/{match.group(3)}")

    def _headers(self, body: bytes, status: int = 200, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()

    def _missing(self) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("X-Error-Message", "Entry not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        body = self._lookup()
        if body is None:
            self._missing()
        else:
            self._headers(body)

    def do_GET(self) -> None:
        body = self._lookup()
        if body is None:
            self._missing()
            return
        wanted = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "") or self.headers.get("range", ""))
        if wanted:
            start = int(wanted.group(1))
            end = int(wanted.group(2)) if wanted.group(2) else len(body) - 1
            part = body[start : end + 1]
            self._headers(body, 206, len(part))
            self.wfile.write(part)
        else:
            self._headers(body)
            self.wfile.write(body)


@contextmanager
def standin_hub(files: Mapping[str, bytes]) -> Iterator[str]:
    """Serve `{"org/name/file": bytes}` on 127.0.0.1; yields the endpoint URL (for HF_ENDPOINT)."""
    handler = type("Handler", (_Handler,), {"files": dict(files)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
