"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests without a key or internet.

Each request to `/v1/chat/completions` takes the next step of a script: a reply (JSON or any
text), a refusal, an HTTP error (429 with Retry-After, 500, ...), a reply that comes too late
for the client's timeout, or the server dying mid-request.  Every request body is kept, so
tests can check what the real `openai` SDK sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    kind: str = "reply"  # reply | error | die
    content: str = ""
    refusal: str | None = None
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = (1000, 200)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""
    delay_s: float = 0.0  # sleep before answering (beyond the client's timeout: a timeout)


def reply(content: str | dict[str, Any] | list[Any], usage: tuple[int, int] | None = (1000, 200),
          finish_reason: str = "stop", delay_s: float = 0.0) -> Step:
    text = content if isinstance(content, str) else json.dumps(content)
    return Step(content=text, usage=usage, finish_reason=finish_reason, delay_s=delay_s)


def proposals(*items: dict[str, Any], retire: list[dict[str, str]] | None = None,
              usage: tuple[int, int] | None = (1000, 200)) -> Step:
    return reply({"proposals": list(items), "retire": retire or []}, usage=usage)


def refusal(text: str = "I'm sorry, but I can't help with that.") -> Step:
    return Step(content="", refusal=text, usage=(900, 12))


def error(status: int, message: str = "scripted error", **headers: str) -> Step:
    return Step(kind="error", status=status, message=message,
                headers={k.replace("_", "-"): v for k, v in headers.items()})


def rate_limited(retry_after_ms: int = 20) -> Step:
    return error(429, "rate limit reached", retry_after_ms=str(retry_after_ms))


def too_slow(seconds: float = 3.0) -> Step:
    """A reply that arrives after the client gave up (set the client timeout below it)."""
    return reply({"proposals": []}, delay_s=seconds)


def die() -> Step:
    """The server goes away: this request gets no answer and later connections are refused."""
    return Step(kind="die")


class ScriptedServer:
    """`with ScriptedServer([...]) as srv:` then point the SDK at `srv.base_url`."""

    def __init__(self, steps: list[Step] | None = None, *, supports_schema: bool = True,
                 model: str = "test-model") -> None:
        self.steps: deque[Step] = deque(steps or [])
        self.supports_schema = supports_schema
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *steps: Step) -> None:
        with self._lock:
            self.steps.extend(steps)

    @property
    def remaining(self) -> int:
        return len(self.steps)

    def _next(self, body: dict[str, Any]) -> Step:
        with self._lock:
            self.requests.append(body)
            if "response_format" in body and not self.supports_schema:
                return error(400, "response_format of type json_schema is not supported")
            if not self.steps:
                return error(503, "the test script is exhausted", x_should_retry="false")
            return self.steps.popleft()

    def start(self) -> ScriptedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict[str, Any],
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "created": 0,
                         "owned_by": "test"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                step = server._next(body)
                if step.delay_s:
                    time.sleep(step.delay_s)
                if step.kind == "die":
                    self.close_connection = True
                    threading.Thread(target=server.kill, daemon=True).start()
                    return
                if step.kind == "error":
                    self._send(step.status, {"error": {"message": step.message,
                                                       "type": "scripted", "code": None}},
                               step.headers)
                    return
                msg: dict[str, Any] = {"role": "assistant", "content": step.content or None}
                if step.refusal is not None:
                    msg["refusal"] = step.refusal
                payload: dict[str, Any] = {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model", server.model),
                    "choices": [{"index": 0, "message": msg, "logprobs": None,
                                 "finish_reason": step.finish_reason}]}
                if step.usage is not None:
                    payload["usage"] = {"prompt_tokens": step.usage[0],
                                        "completion_tokens": step.usage[1],
                                        "total_tokens": sum(step.usage)}
                self._send(200, payload)

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def kill(self) -> None:
        """Stop answering and close the socket: new connections are refused."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()
