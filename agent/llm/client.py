"""One chat-completion call through the official `openai` SDK, against any compatible server.

Structured output (a JSON schema in `response_format`) is tried first; servers that answer 400
to it get the same request with the schema written into the prompt instead, and the client
remembers that.  Timeouts, 429s and 5xx are retried by the SDK itself (with backoff and
`Retry-After`); what still fails becomes `ServiceDown`, which the brainstormer turns into a
pause or a fallback.  Every SDK call, failed or not, yields a `CallLog` for the ledger.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from geoscreen.agent.llm.config import LLMConfig
from geoscreen.agent.llm.tokens import TokenCounter
from geoscreen.agent.textsafe import valid_unicode


@dataclass
class CallLog:
    """One SDK call (its retries included), as the ledger's `llm_calls` table stores it."""

    model: str
    base_url: str
    prompt_hash: str
    mode: str  # json_schema | text
    tokens_in: int = 0
    tokens_out: int = 0
    estimated: bool = False
    latency_s: float = 0.0
    retries: int = 0
    outcome: str = "ok"
    detail: str = ""


@dataclass
class ChatReply:
    text: str
    refusal: str
    finish_reason: str
    logs: list[CallLog] = field(default_factory=list)

    @property
    def log(self) -> CallLog:
        return self.logs[-1]


class ServiceDown(Exception):
    """The server could not answer, even after the SDK's retries."""

    def __init__(self, outcome: str, message: str, logs: list[CallLog]) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.logs = logs


def prompt_hash(model: str, messages: list[dict[str, str]], mode: str) -> str:
    blob = json.dumps({"model": model, "messages": messages, "mode": mode}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _classify(exc: Exception) -> tuple[str, bool]:
    """(outcome, retried by the SDK) for an exception the SDK raised."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error", True
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited", True
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        if code >= 500:
            return "server_error", True
        named = {400: "bad_request", 401: "auth_error", 403: "auth_error", 404: "not_found",
                 422: "bad_request"}
        return named.get(code, f"http_{code}"), code in (408, 409)
    return "bad_response", False


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


class ChatClient:
    """A configured SDK client plus the structured-output mode that the server accepts."""

    def __init__(self, cfg: LLMConfig, counter: TokenCounter | None = None) -> None:
        from openai import OpenAI

        self.cfg = cfg
        self.counter = counter or TokenCounter()
        self.model = cfg.model or ""
        self.client = OpenAI(api_key=cfg.api_key(), base_url=cfg.base_url,
                             timeout=cfg.timeout_s, max_retries=cfg.max_retries)
        self.base_url = str(self.client.base_url).rstrip("/")
        self.structured = cfg.structured_output is not False

    def chat(self, messages: list[dict[str, str]], schema: dict[str, Any],
             text_instruction: str) -> ChatReply:
        """Ask once; in `auto` mode a 400 to the schema switches to JSON-in-text for good."""
        logs: list[CallLog] = []
        if not self.structured:
            return self._call(_with_instruction(messages, text_instruction), None, logs)
        try:
            return self._call(messages, schema, logs)
        except ServiceDown as exc:
            if self.cfg.structured_output is True or exc.outcome != "bad_request":
                raise
        refused = logs[-1]
        try:
            reply = self._call(_with_instruction(messages, text_instruction), None, logs)
        except ServiceDown as exc:
            if exc.outcome == "bad_request":  # the 400 was about something else
                raise ServiceDown(exc.outcome, str(exc), logs) from None
            raise
        refused.outcome = "unsupported_response_format"
        refused.detail = (f"server refused response_format=json_schema; switched to JSON in "
                          f"the text ({refused.detail})")
        self.structured = False  # for the rest of this campaign
        return reply

    def _call(self, messages: list[dict[str, str]], schema: dict[str, Any] | None,
              logs: list[CallLog]) -> ChatReply:
        mode = "json_schema" if schema is not None else "text"
        log = CallLog(model=self.model, base_url=self.base_url, mode=mode,
                      prompt_hash=prompt_hash(self.model, messages, mode))
        logs.append(log)
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  self.cfg.max_tokens_param: self.cfg.max_tokens}
        if self.cfg.temperature is not None:
            kwargs["temperature"] = self.cfg.temperature
        if schema is not None:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "proposals", "schema": schema, "strict": False}}
        if self.cfg.seed is not None:
            kwargs["seed"] = self.cfg.seed
        if self.cfg.extra_body:
            kwargs["extra_body"] = dict(self.cfg.extra_body)
        t0 = time.monotonic()
        try:
            raw = self.client.chat.completions.with_raw_response.create(**kwargs)
            completion = raw.parse()
        except Exception as exc:  # the SDK's errors, and anything a broken server provokes
            import openai

            if not isinstance(exc, openai.OpenAIError):
                raise
            log.latency_s = time.monotonic() - t0
            log.outcome, retried = _classify(exc)
            log.retries = self.cfg.max_retries if retried else 0
            log.detail = f"{mode}; {_short(exc)}"
            raise ServiceDown(log.outcome, f"{log.outcome} from {self.base_url}: "
                              f"{_short(exc)}", logs) from None
        log.latency_s = time.monotonic() - t0
        log.retries = int(getattr(raw, "retries_taken", 0) or 0)
        choices = getattr(completion, "choices", None) or []
        if not choices:
            log.outcome, log.detail = "bad_response", f"{mode}; the reply has no choices"
            raise ServiceDown("bad_response", f"{self.base_url} answered without choices", logs)
        msg = choices[0].message
        # valid Unicode from here on: a lone surrogate cannot be stored, logged or sent back
        text = valid_unicode(msg.content or "") if isinstance(msg.content, str) else ""
        refusal = getattr(msg, "refusal", None) or ""
        refusal = valid_unicode(refusal) if isinstance(refusal, str) else ""
        sent = sum(len(m["content"]) for m in messages)
        usage = getattr(completion, "usage", None)
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            log.tokens_in = int(usage.prompt_tokens or 0)
            log.tokens_out = int(usage.completion_tokens or 0)
            self.counter.observe(sent, log.tokens_in)
        else:  # servers that report no usage: estimate, and say so
            log.tokens_in = sum(self.counter.count(m["content"]) for m in messages)
            log.tokens_out = self.counter.count(text or refusal)
            log.estimated = True
        return ChatReply(text=text, refusal=refusal,
                         finish_reason=str(choices[0].finish_reason or ""), logs=logs)


def _with_instruction(messages: list[dict[str, str]], instruction: str) -> list[dict[str, str]]:
    """Append the JSON-format instruction to the last user message (one system message only:
    some local chat templates refuse a second)."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] = f"{m['content']}\n\n{instruction}"
            break
    return out
