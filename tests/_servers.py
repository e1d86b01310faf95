"""A small OpenAI-compatible HTTP server for tests: it fails on purpose as told, or answers what a
test scripts (a judge's rating, a client's closing line)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = " はい、そうですね。 "


def completion(text: str) -> dict:
    """A chat completion answering ``text``, as OpenAI's API words it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


class FailingServer:
    """Answers ``/v1/chat/completions`` with the statuses in ``plan`` (then 200 with ``reply(body)``,
    :data:`REPLY` by default), records when each request came, and lists one model, ``m``."""

    def __init__(self, plan=(), key: str | None = None, reply=lambda body: REPLY):
        self.plan, self.key, self.reply, self.times, self.bodies = list(plan), key, reply, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if server.key is None or self.headers.get("Authorization") == f"Bearer {server.key}":
                    return True
                self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
                return False

            def do_GET(self):
                if self._authorized():
                    self._send(200, {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "x"}]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if not self._authorized():
                    return
                server.times.append(time.monotonic())
                server.bodies.append(body)
                status = server.plan.pop(0) if server.plan else 200
                if status == 200:
                    self._send(200, completion(server.reply(body)))
                elif status == 429:
                    self._send(429, {"error": {"message": "slow down"}}, [("Retry-After", "1")])
                else:
                    self._send(status, {"error": {"message": "down"}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
