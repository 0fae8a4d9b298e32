"""A STAND-IN engine process (not an engine) for the supervisor's tests: `python standin_engine_process.py PORT
[START_DELAY_S [ANSWER_DELAY_S]]`.

It sleeps START_DELAY_S before it listens, answers every GET with `{}` (health) and every POST, after
ANSWER_DELAY_S, with one fixed chat completion ("ok"). Standard library only, so that it starts in milliseconds.
"""

from __future__ import annotations

import http.server
import json
import sys
import time

ANSWER = {
    "object": "chat.completion",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class _Handler(http.server.BaseHTTPRequestHandler):
    answer_delay_s = 0.0

    def log_message(self, *args: object) -> None:  # keep the test's output clean
        pass

    def _send(self, body: object) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._send({})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.answer_delay_s)
        self._send(ANSWER)


def main(argv: list[str]) -> None:
    port = int(argv[0])
    start_delay_s, answer_delay_s = (float(a) for a in [*argv[1:], "0", "0"][:2])
    time.sleep(start_delay_s)
    _Handler.answer_delay_s = answer_delay_s
    http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
