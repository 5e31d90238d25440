"""The LLM brainstormer: proposals from any OpenAI-compatible chat model, validated and repaired.

Each iteration the model sees the registries (system prompt) and a budgeted digest of the
ledger, and answers with JSON.  Every proposal is validated against the spec model, the probe's
parameters, the cache's layers and the ledger (parents must exist, retired families are closed,
duplicates are refused and the model is told which result already answers them).  Invalid
proposals go back to the model with their errors for up to `repair_rounds` rounds; what is still
invalid is returned as rejected with the reason, so the ledger shows every proposal's fate.

A reply is untrusted input.  Its call is recorded before its content is read; its JSON is read
within bounds (size, nesting, integer length: `hypotheses.bounded`) and made valid Unicode (lone
surrogates replaced); a proposal that cannot be read becomes a rejected proposal with the reason,
a reply that cannot be read a recorded call with the reason, and the campaign goes on.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from geoscreen.agent.brainstorm import (
    BrainstormerUnavailable,
    OfflineBrainstormer,
    ProposalBatch,
    Rejected,
    check_against_cache,
)
from geoscreen.agent.llm.accounting import CallRecorder, CallRow, usd
from geoscreen.agent.llm.client import CallLog, ChatClient, ChatReply, ServiceDown
from geoscreen.agent.llm.config import LLMConfig, parse_llm_config
from geoscreen.agent.llm.prompting import PromptBuilder, probe_catalog, reply_schema
from geoscreen.agent.llm.tokens import TokenCounter
from geoscreen.agent.state import CampaignState, HypView
from geoscreen.agent.textsafe import valid_unicode
from geoscreen.errors import GeoscreenError, did_you_mean
from geoscreen.hypotheses.bounded import (
    MAX_DEPTH,
    bounded_int,
    json_brackets,
    json_depth,
    json_loads,
)
from geoscreen.hypotheses.spec import HypothesisSpec, ResolvedSpec

_DROP = ("source", "family", "id", "hash", "replaces")  # keys models add that specs lack
_NULLABLE = ("params", "layers", "across_layers", "alternative", "rationale", "tags", "parents")
REPAIRED_TAG = "repaired"
MAX_REPLY_CHARS = 1_000_000  # longer replies are refused unread
_MAX_SCANS = 200  # JSON starts tried when a reply wraps its JSON in prose
_PARENT_ID = re.compile(r"#?([0-9]{1,12})")  # ASCII digits only: "²".isdigit() is True


# -- reading replies ---------------------------------------------------------------------------
@dataclass
class ReplyParse:
    proposals: list[Any] = field(default_factory=list)
    retire: list[Any] = field(default_factory=list)
    error: str = ""
    outcome: str = "ok"


def extract_json(text: str) -> Any:
    """The reply's JSON: the whole text, a ```json fence, or the first object found in prose.

    Bounded: at most `MAX_REPLY_CHARS` characters, `MAX_DEPTH` levels of nesting and 64-digit
    integers; lone surrogates in strings are replaced.  Raises ValueError with the reason.
    """
    s = text.strip()
    if len(s) > MAX_REPLY_CHARS:
        raise ValueError(f"it is {len(s):,} characters long (at most {MAX_REPLY_CHARS:,})")
    if json_depth(s) > MAX_DEPTH:
        raise ValueError(f"it is nested deeper than {MAX_DEPTH} levels")
    candidates = [m.group(1) for m in re.finditer(r"```[A-Za-z]*\s*\n?(.*?)```", s, re.S)]
    candidates.append(s)
    first: json.JSONDecodeError | None = None
    for c in candidates:
        try:
            return valid_unicode(json_loads(c))
        except json.JSONDecodeError as exc:
            first = first or exc
    dec = json.JSONDecoder(parse_int=bounded_int)
    for k, start in enumerate(_json_starts(s)):
        if k >= _MAX_SCANS:
            break
        try:
            obj, _ = dec.raw_decode(s, start)
        except (ValueError, RecursionError):  # JSONDecodeError, an over-long integer, depth
            continue
        if isinstance(obj, dict) or (isinstance(obj, list) and obj
                                     and all(isinstance(x, dict) for x in obj)):
            return valid_unicode(obj)
    assert first is not None
    raise ValueError(f"{first.msg} at line {first.lineno} column {first.colno}")


def _json_starts(text: str) -> Iterator[int]:
    """Positions of '{' and '[' outside double-quoted strings: where JSON may start in prose."""
    return (i for i, ch in json_brackets(text) if ch in "{[")


def parse_reply(reply: ChatReply) -> ReplyParse:
    """Reply-level checks: refusal, truncation, JSON syntax, the top-level shape."""
    if reply.refusal or reply.finish_reason == "content_filter":
        why = " ".join((reply.refusal or "content filter").split())[:200]
        return ReplyParse(error=f"the model refused ({why})", outcome="refusal")
    if not reply.text.strip():
        return ReplyParse(error="the reply was empty", outcome="empty")
    try:
        obj = extract_json(reply.text)
    except ValueError as exc:
        if reply.finish_reason == "length":
            return ReplyParse(error="the reply was cut off at max_tokens; propose fewer or "
                                    "shorter hypotheses", outcome="truncated")
        return ReplyParse(error=f"the reply is not valid JSON ({exc})", outcome="malformed_json")
    if isinstance(obj, list):
        obj = {"proposals": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("proposals"), list):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        return ReplyParse(error=f"the reply must be a JSON object with a 'proposals' list "
                                f"(got {keys})", outcome="schema_invalid")
    retire = obj.get("retire") or []
    return ReplyParse(proposals=obj["proposals"],
                      retire=retire if isinstance(retire, list) else [retire])


def _parse_safely(reply: ChatReply) -> ReplyParse:
    """`parse_reply`, with anything it did not foresee turned into an unreadable reply."""
    try:
        return parse_reply(reply)
    except Exception as exc:  # RecursionError, MemoryError-free surprises from odd content
        return ReplyParse(error=f"the reply could not be read ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]})", outcome="unreadable")


# -- checking proposals --------------------------------------------------------------------------
def normalise(item: dict[str, Any], source: str) -> dict[str, Any]:
    """Drop keys models like to add and nulls for optional fields; set the source."""
    raw = {k: v for k, v in item.items()
           if k not in _DROP and not (v is None and k in _NULLABLE)}
    parents = raw.get("parents")
    if isinstance(parents, list):
        raw["parents"] = [int(m.group(1)) if isinstance(p, str)
                          and (m := _PARENT_ID.fullmatch(p.strip())) else p for p in parents]
    raw["source"] = source
    return raw


def _errors(exc: Exception) -> str:
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    out = []
    for err in exc.errors()[:4]:
        loc = ".".join(str(x) for x in err["loc"]) or "proposal"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = (f"unknown field; "
                   f"{did_you_mean(str(err['loc'][-1]), list(HypothesisSpec.model_fields))}")
        out.append(f"field '{loc}': {msg}")
    return "; ".join(out)


def check_files(spec: HypothesisSpec, allow_files: tuple[str, ...]) -> str:
    """Refuse `file:` references in a model's spec outside the folders the user allowed.

    The reason names the path the model wrote, never anything read from it.
    """
    from geoscreen.hypotheses.spec import file_refs
    from geoscreen.store.userfiles import allowed_roots, is_allowed

    refs = file_refs({**spec.params, "universe": spec.universe})
    if not refs:
        return ""
    roots = allowed_roots(allow_files) or ()
    bad = [r for r in refs if not roots or not is_allowed(r, roots)]
    if not bad:
        return ""
    where = ("no folder is allowed" if not roots else
             "allowed folders: " + ", ".join(str(r) for r in roots))
    return (f"field 'params': file:{bad[0][:200]} may not be read ({where}); use named "
            "resources (GO, STRING, TRRUST, ...) or genes:/pairs: lists")


def validate(raw: dict[str, Any], state: CampaignState,
             retired: dict[str, str]) -> tuple[ResolvedSpec | None, str]:
    """The resolved spec, or the reasons it is invalid (all that one pass can find)."""
    from pydantic import ValidationError

    try:
        spec = HypothesisSpec.model_validate(raw)
        resolved = spec.resolved()
    except (GeoscreenError, ValidationError) as exc:
        return None, _errors(exc)
    if err := check_files(spec, state.allow_files):
        return None, err  # before anything reads the file
    if err := check_against_cache(resolved, state.cache):
        return None, err
    ids = {h.id for h in state.history}
    missing = [p for p in spec.parents if p not in ids]
    if missing:
        return None, (f"field 'parents': {', '.join(f'#{p}' for p in missing)} not in the "
                      "ledger; cite ids shown as #N in the prompt, or []")
    if resolved.family in retired:
        return None, (f"family {resolved.family!r} is retired ({retired[resolved.family]}); "
                      "propose in another family")
    return resolved, ""


def answered_by(h: HypView) -> str:
    """How an existing ledger row answers a duplicate proposal."""
    if h.status == "done":
        eff = f", {h.effect_name}={h.effect_size:.3g}" if h.effect_size is not None else ""
        q = f"{h.q_bh:.3g}" if h.q_bh is not None else "NA"
        p = f"{h.p_value:.3g}" if h.p_value is not None else "NA"
        return f"duplicate of #{h.id} (p={p}, q={q}{eff})"
    if h.status == "failed":
        return f"duplicate of #{h.id} (failed: {' '.join(h.error.split())[:120]})"
    return f"duplicate of #{h.id} ({h.status}, not yet tested)"


@dataclass
class Candidate:
    """A proposal that is invalid so far, under the label the model is asked to fix."""

    label: str
    raw: dict[str, Any]
    error: str
    first_error: str
    asked: int = 0  # repair rounds that asked for it


def _shown(raw: dict[str, Any]) -> dict[str, Any]:
    """A proposal as the model wrote it (without the source we set)."""
    return {k: v for k, v in raw.items() if k != "source"}


# -- the brainstormer ----------------------------------------------------------------------------
class OpenAIBrainstormer:
    """`--brainstormer openai`: see the module docstring; `from_options` builds it."""

    def __init__(self, cfg: LLMConfig, *, ledger: Any | None = None,
                 campaign_id: int | None = None) -> None:
        if not cfg.model:
            raise GeoscreenError("no model configured", field="llm.model",
                                 fix="set llm.model in the --config file (the name your "
                                     "OpenAI, vLLM, llama.cpp or Ollama server serves)")
        self.cfg = cfg
        self.name = f"openai:{cfg.model}"[:100]
        self.source = f"llm:{cfg.model}"
        self.counter = TokenCounter()
        self.prompts = PromptBuilder(cfg.templates_dir, self.counter)
        self.client = ChatClient(cfg, self.counter)
        self.recorder = CallRecorder(ledger, campaign_id)
        self.offline = OfflineBrainstormer()
        self._started = time.monotonic()
        self._prior_cost = self.recorder.prior_cost()
        self._system: str | None = None

    @classmethod
    def from_options(cls, *, ledger: Any | None = None, campaign_id: int | None = None,
                     llm: dict[str, Any] | LLMConfig | None = None,
                     config_path: str | None = None, **overrides: Any) -> OpenAIBrainstormer:
        """Options from `load_campaign_config` (`llm`), plus flat overrides such as `model`."""
        data = llm.model_dump() if isinstance(llm, LLMConfig) else dict(llm or {})
        for key, var in (("model", "GEOSCREEN_LLM_MODEL"), ("base_url", "GEOSCREEN_LLM_BASE_URL")):
            if not data.get(key) and os.environ.get(var):
                data[key] = os.environ[var]
        data.update({k: v for k, v in overrides.items() if v is not None})
        cfg = parse_llm_config(data, config_path or "LLM options")
        return cls(cfg, ledger=ledger, campaign_id=campaign_id)

    # -- budgets ---------------------------------------------------------------------------------
    def spent(self) -> float:
        return self._prior_cost + self.recorder.cost

    def over_cost(self) -> bool:
        return self.cfg.max_cost_usd is not None and self.spent() >= self.cfg.max_cost_usd

    def budget_exhausted(self) -> str | None:
        """Called by the campaign before each iteration (outside any ledger transaction)."""
        self.recorder.flush()
        if self.over_cost():
            return (f"cost budget of {usd(self.cfg.max_cost_usd or 0.0)} reached "
                    f"({usd(self.spent())} spent on {self.cfg.model})")
        minutes = (time.monotonic() - self._started) / 60
        if self.cfg.max_minutes is not None and minutes >= self.cfg.max_minutes:
            return f"wall-time budget of {self.cfg.max_minutes:g} min reached ({minutes:.1f} min)"
        return None

    def close(self) -> None:
        """Wait for call records to reach the ledger."""
        self.recorder.flush()

    # -- accounting ------------------------------------------------------------------------------
    @staticmethod
    def _detail(log: CallLog, detail: str) -> str:
        parts = [log.mode, f"retries={log.retries}"]
        if log.estimated:
            parts.append("tokens estimated")
        if log.detail and log.outcome != "ok":
            parts.append(log.detail)
        if detail:
            parts.append(detail)
        return valid_unicode("; ".join(parts)[:2000])

    def record(self, log: CallLog, purpose: str, iteration: int | None,
               outcome: str | None = None, detail: str = "") -> CallRow:
        """Record one call (queued for the ledger at once); returns its row for `amend`."""
        return self.recorder.record(CallRow(
            iteration_index=iteration, model=log.model, base_url=log.base_url,
            prompt_hash=log.prompt_hash, purpose=purpose, tokens_in=log.tokens_in,
            tokens_out=log.tokens_out, cost_usd=self.cfg.cost(log.tokens_in, log.tokens_out),
            latency_s=round(log.latency_s, 4), outcome=outcome or log.outcome,
            detail=self._detail(log, detail)))

    def amend(self, row: CallRow, log: CallLog, outcome: str, detail: str) -> None:
        """What reading a recorded call's reply found."""
        self.recorder.amend(row, outcome, self._detail(log, detail))

    # -- proposing -------------------------------------------------------------------------------
    def propose(self, state: CampaignState, k: int) -> ProposalBatch:
        if k <= 0:
            return ProposalBatch()
        return _Proposer(self, state, k).run()


class _Proposer:
    """One iteration's conversation: ask, validate, repair, and sort out every proposal."""

    def __init__(self, bs: OpenAIBrainstormer, state: CampaignState, k: int) -> None:
        self.bs, self.state, self.k, self.cfg = bs, state, k, bs.cfg
        probes = probe_catalog()
        self.families = sorted({p["family"] for p in probes})
        self.schema = reply_schema([p["name"] for p in probes])
        if bs._system is None:
            bs._system = bs.prompts.system(probes)
        user, _dropped = bs.prompts.iteration(state, k, self.cfg.prompt_token_budget,
                                              self.families)
        self.messages = [{"role": "system", "content": bs._system},
                         {"role": "user", "content": user}]
        self.instruction = bs.prompts.json_instruction(self.schema)
        self.batch = ProposalBatch()
        self.known = {h.hash: h for h in state.history}
        self.taken: dict[str, str] = {}  # hash -> label, accepted this iteration
        self.pending: dict[str, Candidate] = {}
        self.mention: dict[str, tuple[dict[str, Any], str]] = {}  # duplicates to tell about
        self.dup_asked: dict[str, tuple[dict[str, Any], str]] = {}  # ... and already told
        self.asked: list[str] = []
        self.blobs: set[str] = set()
        self.notes: list[str] = []
        self.round = 0
        self.n_labels = 0
        self.reply_error = ""

    @property
    def room(self) -> int:
        return self.k - len(self.batch.accepted)

    def can_repair(self) -> bool:
        if self.round >= self.cfg.repair_rounds:
            return False
        if self.bs.over_cost():
            self.notes.append("no repair: the cost budget is reached")
            return False
        return True

    def ask(self, purpose: str) -> ChatReply:
        if purpose == "repair":
            self.round += 1
        return self.bs.client.chat(self.messages, self.schema, self.instruction)

    def run(self) -> ProposalBatch:
        purpose = "propose"
        try:
            reply = self.ask(purpose)
            while True:
                for log in reply.logs[:-1]:
                    self.bs.record(log, purpose, self.state.iteration)
                # the paid call is in the ledger before a byte of its content is read
                row = self.bs.record(reply.log, purpose, self.state.iteration, "received",
                                     "reply not read yet")
                parsed = _parse_safely(reply)
                if parsed.error:
                    self.reply_error = parsed.error
                    snippet = " ".join((reply.text or reply.refusal).split())[:200]
                    self.bs.amend(row, reply.log, parsed.outcome,
                                  f"{parsed.error}; reply: {snippet}")
                    if not self.can_repair():
                        self.notes.append(f"model reply unusable: {parsed.error}")
                        break
                    text = self.bs.prompts.repair(reply_error=parsed.error, problems=[],
                                                  remaining=self.room, round=self.round + 1,
                                                  max_rounds=self.cfg.repair_rounds)
                else:
                    summary = self.take(parsed)
                    self.bs.amend(row, reply.log, "ok", summary)
                    if self.room <= 0 or not (self.pending or self.mention) \
                            or not self.can_repair():
                        break
                    problems = self.problems()
                    text = self.bs.prompts.repair(reply_error="", problems=problems,
                                                  remaining=self.room, round=self.round + 1,
                                                  max_rounds=self.cfg.repair_rounds)
                self.messages += [{"role": "assistant",
                                   "content": reply.text or reply.refusal or "(empty)"},
                                  {"role": "user", "content": text}]
                purpose = "repair"
                reply = self.ask(purpose)
        except ServiceDown as exc:
            for log in exc.logs:
                self.bs.record(log, purpose, self.state.iteration)
            self.service_down(exc)
        return self.finish()

    # -- one reply ---------------------------------------------------------------------------------
    def take(self, parsed: ReplyParse) -> str:
        """Sort the reply's proposals into accepted, pending repair and rejected."""
        self.take_retire(parsed.retire)
        open_labels = list(self.asked)
        self.asked = []
        counts = {"accepted": 0, "invalid": 0, "duplicate": 0, "extra": 0}
        for item in parsed.proposals:
            want = item.get("replaces") if isinstance(item, dict) else None
            if self.round == 0 or not open_labels:
                self.n_labels += 1
                label = f"P{self.n_labels}"
            elif isinstance(want, str) and want in open_labels:
                label = want
                open_labels.remove(want)
            else:
                label = open_labels.pop(0)
            before = self.pending.pop(label, None)
            replaced_dup = self.dup_asked.pop(label, None)
            if not isinstance(item, dict):
                raw = {"proposal": item, "source": self.bs.source}
                spec, error = None, "each proposal must be a JSON object"
            else:
                try:
                    raw = normalise(item, self.bs.source)
                    spec, error = validate(raw, self.state,
                                           {**self.state.retired, **self.batch.retire})
                except Exception as exc:  # content no check foresaw: refuse it, go on
                    counts["invalid"] += 1
                    raw = {**item, "source": self.bs.source}
                    self.reject(raw, f"could not be read ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]})")
                    continue
            if spec is None:
                counts["invalid"] += 1
                self.pending[label] = Candidate(label, raw, error,
                                                before.first_error if before else error,
                                                before.asked if before else 0)
                continue
            if spec.hash in self.known or spec.hash in self.taken:
                counts["duplicate"] += 1
                reason = (answered_by(self.known[spec.hash]) if spec.hash in self.known
                          else f"duplicate of {self.taken[spec.hash]} in this iteration")
                self.reject(raw, reason)
                self.mention[label] = (raw, reason)
                continue
            if self.room <= 0:
                counts["extra"] += 1
                self.reject(raw, f"beyond the {self.k} proposals asked for this iteration")
                continue
            counts["accepted"] += 1
            self.accept(label, spec, before, replaced_dup)
        shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        return f"round {self.round}: {len(parsed.proposals)} proposals ({shown or 'none'})"

    def take_retire(self, items: list[Any]) -> None:
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("family"), str):
                self.notes.append(f"ignored a malformed retire entry: {str(item)[:80]}")
                continue
            fam = item["family"]
            reason = " ".join(str(item.get("reason") or "no reason given").split())[:300]
            if fam in self.state.retired or fam in self.batch.retire:
                continue
            if fam not in self.families:
                self.notes.append(f"retire request for unknown family {fam!r} ignored")
                continue
            done = [h for h in self.state.history if h.family == fam and h.status == "done"]
            hits = sum(1 for h in done if h.significant)
            if hits:
                self.notes.append(f"retire request for {fam!r} ignored: it has {hits} "
                                  "discoveries")
            elif len(done) < self.cfg.retire_min_tested:
                self.notes.append(f"retire request for {fam!r} ignored: only {len(done)} "
                                  f"tested (at least {self.cfg.retire_min_tested} needed)")
            else:
                self.batch.retire[fam] = (f"{reason} (retired by {self.bs.source} after "
                                          f"{len(done)} tests without a discovery)")

    def accept(self, label: str, spec: ResolvedSpec, before: Candidate | None,
               replaced_dup: tuple[dict[str, Any], str] | None) -> None:
        if self.round > 0:
            if before is not None:
                why = f"was invalid: {before.first_error}"
            elif replaced_dup is not None:
                why = f"replaces a proposal that was a {replaced_dup[1]}"
            elif self.reply_error:
                why = f"an earlier reply was unusable: {self.reply_error}"
            else:
                why = "proposed during a repair round"
            s = spec.spec
            new = s.model_copy(update={
                "tags": [*s.tags, REPAIRED_TAG] if REPAIRED_TAG not in s.tags else s.tags,
                "rationale": f"{s.rationale} [repaired in round {self.round}; {why[:200]}]"
                .strip()})
            spec = spec.model_copy(update={"spec": new})
        self.taken[spec.hash] = label
        self.batch.accepted.append(spec)

    def reject(self, raw: dict[str, Any], reason: str) -> None:
        blob = json.dumps(raw, sort_keys=True, default=str)
        if blob not in self.blobs:  # the ledger keys rejected rows by their content
            self.blobs.add(blob)
            self.batch.rejected.append(Rejected(raw=raw, reason=reason))

    def problems(self) -> list[dict[str, Any]]:
        """What the next repair round asks about: invalid proposals, then fresh duplicates."""
        out = []
        for c in self.pending.values():
            c.asked += 1
            out.append({"label": c.label, "kind": "invalid", "error": c.error,
                        "raw": _shown(c.raw)})
        for label, (raw, reason) in self.mention.items():
            out.append({"label": label, "kind": "duplicate", "error": reason,
                        "raw": _shown(raw)})
        self.dup_asked, self.mention = self.mention, {}
        self.asked = [p["label"] for p in out]
        return out

    # -- endings -----------------------------------------------------------------------------------
    def service_down(self, exc: ServiceDown) -> None:
        why = f"LLM service unavailable: {exc}"
        if self.batch.accepted:
            self.notes.append(f"{why}; kept the {len(self.batch.accepted)} proposals obtained "
                              "before it failed")
            for c in self.pending.values():
                c.error += " (not repaired: the service became unavailable)"
        elif self.cfg.on_failure == "fallback":
            off = self.bs.offline.propose(self.state, self.room)
            for spec in off.accepted:
                if spec.hash not in self.taken:
                    self.taken[spec.hash] = "offline"
                    self.batch.accepted.append(spec)
            self.notes.append(f"{why}; the offline brainstormer proposed "
                              f"{len(off.accepted)} hypotheses instead (on_failure: fallback)")
        else:
            raise BrainstormerUnavailable(f"{exc} (on_failure: pause; resume with the same "
                                          "command once the server is back)") from None

    def finish(self) -> ProposalBatch:
        for c in self.pending.values():
            after = f" (after {c.asked} repair round{'s' * (c.asked != 1)})" if c.asked else ""
            self.reject(c.raw, f"invalid{after}: {c.error}")
        self.pending = {}
        self.batch.note = "; ".join(dict.fromkeys(self.notes))
        return self.batch
