"""The command line's work: build the model and its inputs, audit, print."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from .api import audit_model
from .inputs import PaddingSpec

__all__ = ["load_model", "example_for", "main", "run"]

TRANSFORMERS_HINT = (
    "this needs Hugging Face transformers: pip install 'lnbn_utils[audit]' "
    "(or pip install transformers==5.24.0)"
)


def load_model(
    spec: str,
    config: Optional[dict] = None,
    model_class: Optional[str] = None,
    weights: Optional[str] = None,
) -> tuple[nn.Module, Any]:
    """A model (and example inputs, if the factory gives them) from a string.

    ``"pkg.module:factory"`` calls ``factory(**config)``, which returns a model or a
    ``(model, example_inputs)`` pair. ``"hf:GPT2Config"`` (or any name ending in
    ``Config``) builds that Hugging Face config with ``config`` overrides and a model
    with random weights (``model_class``, default ``AutoModel``), or with the weights
    saved in the local directory ``weights``; nothing is downloaded.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"expected 'module:factory' or 'hf:SomeConfig', got {spec!r}")
    if spec.startswith("hf:") or (":" not in spec and spec.endswith("Config")):
        hf = _load_hf(spec.removeprefix("hf:"), config or {}, model_class, weights)
        return hf, None
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"expected 'module:factory' or 'hf:SomeConfig', got {spec!r}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(
            f"could not import module {mod_name!r} from {spec!r}: {e}"
        ) from e
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"module {mod_name!r} has no attribute {attr!r} (from {spec!r})"
            )
        obj = getattr(obj, part)
    made = (
        obj(**(config or {}))
        if callable(obj) and not isinstance(obj, nn.Module)
        else obj
    )
    model, example = (
        made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    )
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected {spec!r} to give an nn.Module, got {type(model).__name__}"
        )
    return model, example


def _load_hf(
    name: str, overrides: dict, model_class: Optional[str], weights: Optional[str]
) -> nn.Module:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"{name}: {TRANSFORMERS_HINT}") from e
    cfg_cls = getattr(transformers, name, None)
    if cfg_cls is None or not name.endswith("Config"):
        raise ValueError(
            "expected a transformers config class name such as 'GPT2Config', "
            f"got {name!r}"
        )
    cfg = cfg_cls(**overrides)
    cls = getattr(transformers, model_class or "AutoModel", None)
    if cls is None:
        raise ValueError(f"expected a transformers model class, got {model_class!r}")
    if weights is not None:
        return cls.from_pretrained(weights, config=cfg, local_files_only=True)
    return cls.from_config(cfg) if hasattr(cls, "from_config") else cls(cfg)


def example_for(
    model: nn.Module, batch: int = 4, length: int = 16, seed: int = 0
) -> dict:
    """Random inputs for a model built from a Hugging Face config (ids or pixels)."""
    cfg = getattr(model, "config", None)
    g = torch.Generator().manual_seed(seed)
    if cfg is not None and getattr(cfg, "image_size", None):
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        return {
            "pixel_values": torch.randn(
                batch, getattr(cfg, "num_channels", 3), size, size, generator=g
            )
        }
    if getattr(model, "main_input_name", "") == "input_values":  # raw audio
        return {"input_values": torch.randn(batch, 320 * length + 80, generator=g)}
    if cfg is not None and getattr(cfg, "vocab_size", None):
        return {
            "input_ids": torch.randint(1, cfg.vocab_size, (batch, length), generator=g)
        }
    raise ValueError(
        f"cannot guess inputs for {type(model).__name__}: use --inputs, or a factory "
        "that "
        "returns (model, example_inputs)"
    )


def _parse_inputs(text: str, seed: int) -> Any:
    """``ids:B,T[:V]``, ``float:B,T,C`` or ``image:B,C,H,W`` -> a random tensor."""
    kind, _, rest = text.partition(":")
    dims, _, vocab = rest.partition(":")
    try:
        shape = tuple(int(d) for d in dims.split(","))
        vocab_n = int(vocab) if vocab else 64
    except ValueError:
        raise ValueError(
            f"expected e.g. ids:4,16:64 or float:4,16,32, got {text!r}"
        ) from None
    g = torch.Generator().manual_seed(seed)
    if kind == "ids":
        return torch.randint(1, vocab_n, shape, generator=g)
    if kind in ("float", "image"):
        return torch.randn(shape, generator=g)
    raise ValueError(f"expected input kind ids, float or image, got {kind!r}")


def _pad_is(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("0", "1"):
        return int(low)
    raise ValueError(f"expected --pad-is 0, 1, true or false, got {text!r}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (see ``--help``)."""
    from lnbn_audit import main as cli_main

    return cli_main(argv)


def _position_ids(pad: torch.Tensor) -> dict:
    """Position ids that skip the pads: cumsum(real) - 1 (0 at the pads)."""
    return {"position_ids": ((~pad).long().cumsum(1) - 1).clamp(min=0)}


def run(a: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """Run the audit the parsed command line asks for; returns the exit status."""
    try:
        config = json.loads(a.config)
        if not isinstance(config, dict):
            raise ValueError(f"expected --config to be a JSON object, got {a.config!r}")
        torch.manual_seed(a.seed)  # before the weights are drawn: reproducible
        model, example = load_model(a.model, config, a.model_class, a.weights)
        if a.inputs:
            example = _parse_inputs(a.inputs, a.seed)
        elif example is None:
            example = example_for(model, a.batch, a.length, a.seed)
        padding = None
        if a.mask_arg:
            padding = PaddingSpec(
                a.mask_arg,
                _pad_is(a.pad_is),
                a.pad_value,
                tuple(a.pad_sides.split(",")),
                extra=_position_ids if a.position_ids else None,
            )
        props = a.properties.split(",") if a.properties else None
        progress = {"always": True, "never": False}.get(a.progress, sys.stderr.isatty())
        output = int(a.output) if a.output and a.output.isdigit() else a.output
        report = audit_model(
            model,
            example,
            primary=a.primary,
            batch_dim=a.batch_dim,
            output=output,
            dtype=getattr(torch, a.dtype) if a.dtype else None,
            max_cuts=a.max_cuts,
            properties=props,
            modes=tuple(a.modes.split(",")),
            causal=a.causal,
            padding=padding,
            pad_length=a.pad_length,
            trials=a.trials,
            rtol=a.rtol,
            seed=a.seed,
            progress=progress,
            name=a.model,
        )
        failed = report.failures(a.require) if a.require else []
    except (ValueError, TypeError, ImportError, json.JSONDecodeError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    except Exception as e:  # noqa: BLE001 - a crash must not read as "a check failed"
        p.exit(2, f"{p.prog}: error: {type(e).__name__}: {e}\n")
    print(json.dumps(report.to_dict(), indent=1) if a.json else report.table())
    for c in report.inconclusives():
        print(f"inconclusive: {c.property}:{c.mode} ({c.note})", file=sys.stderr)
    if failed:
        names = ", ".join(f"{c.property}:{c.mode}" for c in failed)
        print(f"FAILED required properties: {names}", file=sys.stderr)
        return 1
    return 0
