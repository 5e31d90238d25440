"""Campaign config files (YAML): the LLM brainstormer's model, server, prices and budgets.

One file describes how to reach a model, so the same campaign runs against OpenAI, vLLM,
llama.cpp's server or Ollama by swapping the file.  It is validated up front: a typo becomes one
line naming the file and the field, not a failure twenty minutes into a campaign.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geoscreen.errors import GeoscreenError, did_you_mean


class LLMConfig(BaseModel):
    """How to call the model, what it costs, and what to do when it is down."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model name as the server knows it")
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1; "
                          "None: the SDK default (OPENAI_BASE_URL or api.openai.com)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable with the key")
    temperature: float | None = Field(0.7, ge=0.0, le=2.0, allow_inf_nan=False,
                                      description="null: leave it to the server (o-series models)")
    max_tokens: int = Field(4096, ge=64, description="completion tokens per call")
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="request field for max_tokens (OpenAI reasoning models need "
                                  "max_completion_tokens)")
    price_in_per_mtok: float = Field(0.0, ge=0.0, allow_inf_nan=False,
                                     description="USD per million prompt tokens")
    price_out_per_mtok: float = Field(0.0, ge=0.0, allow_inf_nan=False,
                                      description="USD per million completion tokens")
    timeout_s: float = Field(120.0, gt=0.0, allow_inf_nan=False,
                            description="per HTTP attempt (a positive number of seconds)")
    max_retries: int = Field(3, ge=0, le=10,
                             description="SDK retries (with backoff) on timeouts, 429 and 5xx")
    structured_output: Literal["auto"] | bool = Field(
        "auto", description="JSON-schema response_format: true, false (JSON in the text), or "
                            "auto (try it, fall back when the server refuses it)")
    templates_dir: str | None = Field(
        None, description="folder with replacement prompt templates (missing ones: built-in)")
    on_failure: Literal["pause", "fallback"] = Field(
        "pause", description="service down: pause the campaign, or use the offline brainstormer")
    max_cost_usd: float | None = Field(None, ge=0.0, allow_inf_nan=False,
                                       description="stop the campaign at this spend")
    max_minutes: float | None = Field(None, gt=0.0, allow_inf_nan=False,
                                      description="stop the campaign after this")
    repair_rounds: int = Field(2, ge=0, le=5, description="re-asks for invalid proposals")
    prompt_token_budget: int = Field(4000, ge=500,
                                     description="tokens for the ledger summary in each prompt")
    retire_min_tested: int = Field(
        3, ge=1, description="tested hypotheses without a discovery before a family may retire")
    seed: int | None = Field(None, description="sampling seed, for servers that honour it")
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="extra JSON for the request (server-specific options)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else v

    def api_key(self) -> str:
        """The key from `api_key_env`; local servers without auth get a placeholder."""
        key = os.environ.get(self.api_key_env, "")
        if key:
            return key
        if self.base_url is None or "api.openai.com" in self.base_url:
            raise GeoscreenError(f"environment variable {self.api_key_env} is not set",
                                 field="llm.api_key_env",
                                 fix="export the key, or set llm.base_url to a local server")
        return "not-needed"

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in_per_mtok + tokens_out * self.price_out_per_mtok) / 1e6


class CampaignFileConfig(BaseModel):
    """The whole file.  Only `llm` today; unknown top-level keys are errors (typos)."""

    model_config = ConfigDict(extra="forbid")

    llm: LLMConfig = Field(default_factory=LLMConfig)


def _one_line(exc: ValidationError, path: str) -> GeoscreenError:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "llm"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        model = LLMConfig if len(err["loc"]) > 1 else CampaignFileConfig
        msg = f"unknown field; {did_you_mean(str(err['loc'][-1]), list(model.model_fields))}"
    return GeoscreenError(msg, path=path, field=loc)


def parse_llm_config(data: dict[str, Any] | LLMConfig | None, path: str = "LLM options",
                     base_dir: Path | None = None) -> LLMConfig:
    """Validate an `llm:` mapping; a relative templates_dir is taken from `base_dir`."""
    if isinstance(data, LLMConfig):
        cfg = data
    else:
        try:
            cfg = CampaignFileConfig.model_validate({"llm": data or {}}).llm
        except ValidationError as exc:
            raise _one_line(exc, path) from None
    if cfg.templates_dir and base_dir is not None and not Path(cfg.templates_dir).is_absolute():
        cfg = cfg.model_copy(update={"templates_dir": str(base_dir / cfg.templates_dir)})
    if cfg.templates_dir and not Path(cfg.templates_dir).expanduser().is_dir():
        raise GeoscreenError(f"folder {cfg.templates_dir} does not exist", path=path,
                             field="llm.templates_dir")
    return cfg


def load_campaign_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a campaign config file; returns the brainstormer options."""
    from geoscreen.hypotheses.bounded import read_text_file, yaml_documents

    p = Path(path).expanduser()
    if not p.exists():
        raise GeoscreenError("does not exist", path=str(p), field="--config")
    # bounded like spec files: regular file, size, nesting, alias expansion
    docs = yaml_documents(read_text_file(p, what="config file"), str(p))
    if len(docs) > 1:
        raise GeoscreenError(f"holds {len(docs)} YAML documents, expected one", path=str(p))
    data = docs[0] if docs else {}
    if not isinstance(data, dict):
        raise GeoscreenError(f"holds a {type(data).__name__}, expected a mapping with an "
                             "'llm:' section", path=str(p))
    try:
        parsed = CampaignFileConfig.model_validate(data)
    except ValidationError as exc:
        raise _one_line(exc, str(p)) from None
    llm = parse_llm_config(parsed.llm, str(p), base_dir=p.resolve().parent)
    return {"llm": llm.model_dump(), "config_path": str(p)}
