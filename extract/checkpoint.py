"""Load an scGPT checkpoint directory and prove that the model we run is the one on disk.

scGPT's own ``load_pretrained`` silently skips every tensor whose name or shape does not match,
so a wrong ``args.json`` yields a half-random model that still "works".  Here the path from the
input tokens to the layer outputs (gene encoder, value encoder, transformer layers) is checked
both ways: every such model tensor comes from the checkpoint with its exact shape, and every such
checkpoint tensor lands in the model.  Anything else in the file must be a known scGPT head
(expression decoders, cell-type classifier, the pretraining flag embedding); heads do not touch
the representations, and each one is accounted for in the load report rather than dropped
silently.  Weights are read with ``torch.load(weights_only=True)``: a file that needs code to
load is refused.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import sha256_file

ARGS_FILE = "args.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "best_model.pt"
REQUIRED_FILES = (ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE)
SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")

#: Modules on the path from tokens to layer outputs: verified strictly, both ways.
ENCODER_PREFIXES = ("encoder.", "value_encoder.", "transformer_encoder.")
#: scGPT heads that read the representations but never feed them.
HEAD_PREFIXES = ("decoder.", "mvc_decoder.", "cls_decoder.", "flag_encoder.")
_FLASH_RENAMES = ((".self_attn.Wqkv.weight", ".self_attn.in_proj_weight"),
                  (".self_attn.Wqkv.bias", ".self_attn.in_proj_bias"))


@dataclass(frozen=True)
class ModelConfig:
    """The architecture fields of ``args.json`` that TransformerModel needs."""

    embsize: int
    nheads: int
    d_hid: int
    nlayers: int
    pad_value: float
    n_layers_cls: int = 3
    dropout: float = 0.2
    pad_token: str = "<pad>"
    n_bins: int = 51
    max_seq_len: int = 1200
    input_emb_style: str = "continuous"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int_field(args: Mapping[str, Any], key: str, path: str, *, default: int | None = None,
               minimum: int = 1) -> int:
    if key not in args:
        if default is not None:
            return default
        raise GeoscreenError("is missing, so the model size is unknown", path=path, field=key,
                             fix="use the args.json that was saved with the checkpoint")
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or int(value) < minimum:
        raise GeoscreenError(f"is {value!r}; expected a whole number >= {minimum}", path=path,
                             field=key, fix="use the args.json that was saved with the checkpoint")
    return int(value)


def read_model_config(path: Path) -> ModelConfig:
    """Parse and validate ``args.json``; refuse sizes or features this extractor cannot run."""
    p = str(path)
    try:
        args = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GeoscreenError(f"is not valid JSON ({exc.msg} at line {exc.lineno})",
                             path=p) from None
    if not isinstance(args, dict):
        raise GeoscreenError("must be a JSON object", path=p)
    embsize = _int_field(args, "embsize", p)
    nheads = _int_field(args, "nheads", p)
    if embsize % nheads:
        raise GeoscreenError(f"embsize {embsize} is not divisible by nheads {nheads}", path=p,
                             field="nheads")
    if "pad_value" not in args or isinstance(args["pad_value"], bool) \
            or not isinstance(args["pad_value"], (int, float)):
        raise GeoscreenError("is missing or not a number", path=p, field="pad_value",
                             fix="scGPT whole-human uses -2")
    style = args.get("input_emb_style", "continuous")
    if style != "continuous":
        raise GeoscreenError(f"is {style!r}; only the continuous value encoder is supported",
                             path=p, field="input_emb_style")
    for flag in ("pre_norm", "DSBN", "use_batch_labels"):
        if args.get(flag):
            raise GeoscreenError("is true; this extractor runs the post-norm model without "
                                 "batch labels (as scGPT's embed_data does)", path=p, field=flag)
    pad_token = args.get("pad_token", "<pad>")
    if not isinstance(pad_token, str):
        raise GeoscreenError(f"is {pad_token!r}; expected a token string", path=p,
                             field="pad_token")
    dropout = args.get("dropout", 0.2)
    return ModelConfig(
        embsize=embsize, nheads=nheads, d_hid=_int_field(args, "d_hid", p),
        nlayers=_int_field(args, "nlayers", p), pad_value=float(args["pad_value"]),
        n_layers_cls=_int_field(args, "n_layers_cls", p, default=3),
        dropout=float(dropout) if isinstance(dropout, (int, float)) else 0.2,
        pad_token=pad_token, n_bins=_int_field(args, "n_bins", p, default=51, minimum=3),
        max_seq_len=_int_field(args, "max_seq_len", p, default=1200, minimum=2),
        input_emb_style=style)


def read_vocab(path: Path, pad_token: str = "<pad>") -> dict[str, int]:
    """``vocab.json`` (token -> id) plus scGPT's special tokens, appended as embed_data does."""
    p = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GeoscreenError(f"is not valid JSON ({exc.msg} at line {exc.lineno})",
                             path=p) from None
    if not isinstance(raw, dict) or not raw:
        raise GeoscreenError("must be a non-empty JSON object mapping token -> id", path=p)
    bad = [k for k, v in raw.items() if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise GeoscreenError(f"token {bad[0]!r} has a non-integer id", path=p)
    ids = sorted(raw.values())
    if ids != list(range(len(ids))):
        raise GeoscreenError(f"ids must be 0..{len(ids) - 1} with no gaps or repeats", path=p,
                             fix="use the vocab.json saved with the checkpoint")
    vocab = dict(raw)
    for tok in (pad_token, *SPECIAL_TOKENS):
        if tok not in vocab:
            vocab[tok] = len(vocab)
    return vocab


def check_checkpoint_dir(ckpt_dir: Path) -> None:
    if not ckpt_dir.is_dir():
        raise GeoscreenError("is not a directory", path=str(ckpt_dir), field="--checkpoint",
                             fix="pass the scGPT model folder holding args.json, vocab.json "
                                 "and best_model.pt")
    missing = [f for f in REQUIRED_FILES if not (ckpt_dir / f).is_file()]
    if missing:
        raise GeoscreenError(f"is missing {', '.join(missing)}", path=str(ckpt_dir),
                             field="--checkpoint",
                             fix="an scGPT checkpoint folder holds args.json, vocab.json and "
                                 "best_model.pt")


def _redownload(path: Path) -> str:
    return ("the file looks truncated or damaged (an interrupted download or copy?); "
            f"download {path.name} again and compare its size with the source")


def _first_line(text: str, limit: int = 240) -> str:
    """An exception's first line, cut at a word boundary with an ellipsis if it is long."""
    line = (text.strip().splitlines() or [""])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " …"


def check_weights_file(path: Path) -> None:
    """Cheap integrity check of the weights, before any data is read (seconds, not minutes).

    A PyTorch file of the current format is a zip archive whose directory sits at its end: a
    truncated copy loses it, and each member must lie inside the file.  Only the directory is
    read, never the tensors.  Legacy (pre-zip) pickles are left to `read_state_dict`.
    """
    import zipfile

    size = path.stat().st_size
    if size == 0:
        raise GeoscreenError("is empty (0 bytes)", path=str(path), field="--checkpoint",
                             fix=_redownload(path))
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04":
        return  # a legacy pickle (or not a checkpoint at all): the full load says which
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise GeoscreenError(f"is not a complete PyTorch checkpoint: its zip directory cannot "
                             f"be read ({_first_line(str(exc), 120)}; {size:,} bytes)",
                             path=str(path), field="--checkpoint", fix=_redownload(path)) from None
    if not any(m.filename.endswith("data.pkl") for m in members):
        raise GeoscreenError("is a zip archive without data.pkl, not a PyTorch checkpoint",
                             path=str(path), field="--checkpoint",
                             fix="save the model with torch.save(model.state_dict(), PATH)")
    end = max((m.header_offset + m.compress_size for m in members), default=0)
    if end > size:
        raise GeoscreenError(f"is {size:,} bytes but its directory lists data up to byte "
                             f"{end:,}", path=str(path), field="--checkpoint",
                             fix=_redownload(path))


def read_state_dict(path: Path) -> dict[str, Any]:
    """The checkpoint's tensors, loaded without running any code from the file."""
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, str(exc)) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise GeoscreenError(f"cannot be read as a PyTorch checkpoint "
                             f"({type(exc).__name__}: {_first_line(str(exc))})",
                             path=str(path), field="--checkpoint", fix=_redownload(path)) from None
    if not isinstance(obj, Mapping):
        raise GeoscreenError(f"holds a {type(obj).__name__}, not a state_dict", path=str(path),
                             fix="save model.state_dict() with torch.save")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise GeoscreenError(f"entry {not_tensors[0]!r} is not a tensor", path=str(path),
                             fix="save model.state_dict() with torch.save")
    return dict(obj)


def _unpickling_error(path: Path, text: str) -> GeoscreenError:
    """One line from torch's multi-paragraph weights_only refusal."""
    found = (re.search(r"Unsupported global: GLOBAL (\S+)", text)
             or re.search(r"unsupported GLOBAL (\S+)", text))
    if found:
        return GeoscreenError(f"needs code to load ({found.group(1)}), so it was refused",
                              path=str(path),
                              fix="re-save the weights as a plain state_dict of tensors")
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    reason = detail.group(1).strip() if detail else "not a plain tensor pickle"
    return GeoscreenError(f"cannot be read safely as a PyTorch checkpoint "
                          f"({_first_line(reason, 160)})", path=str(path), field="--checkpoint",
                          fix=f"if it came from the model's own folder, it is damaged: download "
                          f"{path.name} again and compare its size with the source; if you "
                          "saved it yourself, save model.state_dict() with torch.save")


def to_pytorch_names(state: Mapping[str, Any], path: str = WEIGHTS_FILE) -> tuple[dict, int]:
    """Map flash-attn ``Wqkv`` names to PyTorch's ``in_proj`` names; return (state, renamed)."""
    out: dict[str, Any] = {}
    renamed = 0
    for key, value in state.items():
        new = key
        for old_suffix, new_suffix in _FLASH_RENAMES:
            if key.endswith(old_suffix):
                new = key[: -len(old_suffix)] + new_suffix
                renamed += 1
        if new in out:
            raise GeoscreenError(f"holds both {key!r} and its PyTorch name {new!r}", path=path)
        out[new] = value
    return out, renamed


@dataclass
class LoadReport:
    """What happened to every tensor in the checkpoint (recorded in the cache manifest)."""

    n_tensors: int
    n_encoder_tensors: int
    n_encoder_parameters: int
    flash_names_mapped: int
    heads_loaded: list[str] = field(default_factory=list)
    heads_not_in_model: dict[str, str] = field(default_factory=dict)
    heads_absent_from_checkpoint: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> int:
        return self.n_encoder_tensors + len(self.heads_loaded) + len(self.heads_not_in_model)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accounted"] = self.accounted
        return d


def _is(key: str, prefixes: tuple[str, ...]) -> bool:
    return key.startswith(prefixes)


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def verify_and_load(model: Any, state: Mapping[str, Any], path: str = WEIGHTS_FILE) -> LoadReport:
    """Load `state` into scGPT's `model`, refusing any missing, misshapen or unknown tensor."""
    import torch

    mapped, renamed = to_pytorch_names(state, path)
    model_state = model.state_dict()
    hint = "check that args.json and vocab.json belong to this checkpoint"
    missing = [k for k in model_state if _is(k, ENCODER_PREFIXES) and k not in mapped]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise GeoscreenError(f"is missing tensor {', '.join(missing[:3])}{more} that the model "
                             "needs", path=path, fix=hint)
    unknown = [k for k in mapped if not _is(k, ENCODER_PREFIXES + HEAD_PREFIXES)]
    extra = [k for k in mapped if _is(k, ENCODER_PREFIXES) and k not in model_state]
    if unknown or extra:
        names = (extra + unknown)[:3]
        raise GeoscreenError(f"has tensor {', '.join(names)} that this scGPT architecture does "
                             "not have", path=path, fix=hint)
    to_load: dict[str, Any] = {}
    report = LoadReport(n_tensors=len(state), n_encoder_tensors=0, n_encoder_parameters=0,
                        flash_names_mapped=renamed)
    for key, value in mapped.items():
        if _is(key, ENCODER_PREFIXES):
            want, got = _shape(model_state[key]), _shape(value)
            if want != got:
                raise GeoscreenError(f"tensor {key!r} has shape {list(got)} but the model built "
                                     f"from args.json/vocab.json needs {list(want)}", path=path,
                                     fix=hint)
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise GeoscreenError(f"tensor {key!r} has NaN or Inf values", path=path)
            to_load[key] = value
            report.n_encoder_tensors += 1
            report.n_encoder_parameters += math.prod(got)
        elif key in model_state and _shape(model_state[key]) == _shape(value):
            to_load[key] = value
            report.heads_loaded.append(key)
        elif key in model_state:
            report.heads_not_in_model[key] = (f"head tensor shape {list(_shape(value))} differs "
                                              f"from scGPT's {list(_shape(model_state[key]))}")
        else:
            report.heads_not_in_model[key] = "pretraining-only head, not in TransformerModel"
    report.heads_absent_from_checkpoint = [k for k in model_state
                                           if _is(k, HEAD_PREFIXES) and k not in mapped]
    result = model.load_state_dict(to_load, strict=False)
    leftover = [k for k in result.missing_keys if _is(k, ENCODER_PREFIXES)]
    if leftover or result.unexpected_keys or report.accounted != len(state):
        raise GeoscreenError(f"could not be loaded exactly (missing {leftover[:3]}, unexpected "
                             f"{list(result.unexpected_keys)[:3]})", path=path)
    return report


@dataclass
class LoadedModel:
    """scGPT's TransformerModel with verified weights, plus everything needed to feed it."""

    model: Any
    config: ModelConfig
    vocab: dict[str, int]
    report: LoadReport
    checksums: dict[str, str]
    directory: Path


def build_model(config: ModelConfig, vocab: Mapping[str, int]) -> Any:
    """Construct scGPT's own TransformerModel exactly as ``scgpt.tasks.embed_data`` does,
    but with PyTorch attention (flash-attn v1 is not installable on modern torch)."""
    from .scgpt_import import transformer_model_class

    model_cls = transformer_model_class()
    return model_cls(
        ntoken=len(vocab), d_model=config.embsize, nhead=config.nheads, d_hid=config.d_hid,
        nlayers=config.nlayers, nlayers_cls=config.n_layers_cls, n_cls=1, vocab=vocab,
        dropout=config.dropout, pad_token=config.pad_token, pad_value=config.pad_value,
        do_mvc=True, do_dab=False, use_batch_labels=False, domain_spec_batchnorm=False,
        explicit_zero_prob=False, use_fast_transformer=False, fast_transformer_backend="flash",
        pre_norm=False)


def load_checkpoint(ckpt_dir: str | Path, *, device: str = "cpu",
                    dtype: str = "float32") -> LoadedModel:
    """Read, verify and load a checkpoint directory; the model is in eval mode on `device`."""
    import torch

    ckpt_dir = Path(ckpt_dir)
    check_checkpoint_dir(ckpt_dir)
    config = read_model_config(ckpt_dir / ARGS_FILE)
    vocab = read_vocab(ckpt_dir / VOCAB_FILE, config.pad_token)
    state = read_state_dict(ckpt_dir / WEIGHTS_FILE)
    model = build_model(config, vocab)
    report = verify_and_load(model, state, str(ckpt_dir / WEIGHTS_FILE))
    del state
    model.eval()
    # Nested tensors make the padded CPU path ~2-4x slower and would hand hooks nested outputs.
    model.transformer_encoder.use_nested_tensor = False
    model.transformer_encoder.enable_nested_tensor = False
    model.to(device=torch.device(device), dtype=getattr(torch, dtype))
    checksums = {name: sha256_file(ckpt_dir / name) for name in REQUIRED_FILES}
    return LoadedModel(model, config, vocab, report, checksums, ckpt_dir)
