"""The audit's inputs: wrapping, perturbing and padding the example batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

PRIMARY_NAMES = ("input_ids", "pixel_values", "inputs_embeds", "idx", "src", "x")


@dataclass(frozen=True)
class PaddingSpec:
    """How the model is told where the padding is.

    Args:
        mask_arg: keyword argument that carries the mask (``attention_mask`` in
            Hugging Face, ``padding_mask`` in this book, ``src_key_padding_mask`` in
            ``nn.TransformerEncoderLayer``).
        pad_is: the mask value that marks a pad: ``0`` for Hugging Face (1 = attend),
            ``True`` for PyTorch's ``key_padding_mask`` convention (True = pad).
        pad_value: what the padded positions of the primary input hold (a token id,
            or a float for embedded inputs).
        sides: which padding sides to test; ``"left"`` is what batched generation uses.
        extra: optional ``f(pad_mask) -> dict`` of further keyword arguments built from
            the bool (B, T) pad mask (True = pad), e.g. position ids that skip the pads.
        output_length: for a model whose output length differs from its input length
            (audio encoders), ``f(T) -> output length``, e.g. a Wav2Vec2 model's
            ``lambda T: int(model._get_feat_extract_output_lengths(T))``; right
            padding only.
    """

    mask_arg: str = "attention_mask"
    pad_is: Any = 0
    pad_value: float = 0
    sides: tuple[str, ...] = ("right",)
    extra: Optional[Callable[[torch.Tensor], dict]] = None
    output_length: Optional[Callable[[int], int]] = None

    def __post_init__(self) -> None:
        bad = [s for s in self.sides if s not in ("right", "left")]
        if bad or not self.sides:
            raise ValueError(
                f"expected sides from ('right', 'left'), got {self.sides!r}"
            )

    def mask(self, pad: torch.Tensor, like: Optional[torch.Tensor]) -> torch.Tensor:
        """The model's mask for a bool (B, T) pad mask (dtype of ``like`` if given)."""
        if isinstance(self.pad_is, bool):
            m = pad if self.pad_is else ~pad
            return m if like is None else m.to(like.dtype)
        m = torch.where(pad, int(self.pad_is), 1 - int(self.pad_is))
        return m.to(torch.long if like is None else like.dtype)


class _Inputs:
    """Positional and keyword inputs; dim 0 of the *primary* tensor is the batch."""

    def __init__(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], primary: Any
    ) -> None:
        self.args, self.kwargs, self.primary = list(args), dict(kwargs), primary

    @classmethod
    def wrap(
        cls, example: Any, primary: Optional[str], main_name: Optional[str] = None
    ) -> "_Inputs":
        if isinstance(example, torch.Tensor):
            return cls([example], {}, 0)
        if isinstance(example, (tuple, list)) and example:
            return cls(example, {}, 0 if primary is None else int(primary))
        if isinstance(example, Mapping) and example:
            names = ((main_name,) if main_name else ()) + PRIMARY_NAMES
            key = primary or next(
                (k for k in names if k in example), next(iter(example))
            )
            if key not in example:
                raise ValueError(
                    f"expected primary input {key!r} among {list(example)}, got none"
                )
            return cls([], example, key)
        raise TypeError(
            "expected example_inputs to be a tensor, a non-empty tuple of positional "
            "inputs or a non-empty dict of keyword inputs, "
            f"got {type(example).__name__}"
        )

    def get(self) -> torch.Tensor:
        return (
            self.args[self.primary]
            if isinstance(self.primary, int)
            else self.kwargs[self.primary]
        )

    def replace(self, x: torch.Tensor, **kw: Any) -> "_Inputs":
        new = _Inputs(self.args, {**self.kwargs, **kw}, self.primary)
        if isinstance(self.primary, int):
            new.args[self.primary] = x
        else:
            new.kwargs[self.primary] = x
        return new

    def concat(self, other: "_Inputs", B: int) -> "_Inputs":
        """Both batches in one: every tensor whose dim 0 is the batch, concatenated."""
        f = lambda a, b: (  # noqa: E731
            torch.cat([a, b]) if isinstance(a, torch.Tensor) and _batched(a, B) else a
        )
        return _Inputs(
            [f(a, b) for a, b in zip(self.args, other.args)],
            {k: f(v, other.kwargs[k]) for k, v in self.kwargs.items()},
            self.primary,
        )

    def map_batch(
        self, fn: Callable[[torch.Tensor], torch.Tensor], B: int
    ) -> "_Inputs":
        """Apply ``fn`` to every tensor whose dim 0 is the batch (e.g. a reorder)."""
        f = lambda v: fn(v) if _batched(v, B) else v  # noqa: E731
        return _Inputs(
            [f(a) for a in self.args],
            {k: f(v) for k, v in self.kwargs.items()},
            self.primary,
        )


class BatchDim(torch.nn.Module):
    """The model seen batch-first: the audit's primary input has its batch at dim 0.

    Wraps a model whose primary input carries the batch at ``dim`` (e.g.
    ``nn.TransformerEncoderLayer(batch_first=False)``: (T, B, C)): each forward
    moves the primary input's dim 0 to ``dim`` and every output tensor's ``dim``
    back to 0. Other inputs pass as given (PyTorch's key padding masks are (B, T)).
    """

    def __init__(self, model: torch.nn.Module, primary: Any, dim: int) -> None:
        super().__init__()
        self.model, self.primary, self.dim = model, primary, dim

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        inp = _Inputs(args, kwargs, self.primary)
        inp = inp.replace(inp.get().movedim(0, self.dim))
        return _map_tensors(
            self.model(*inp.args, **inp.kwargs), lambda t: t.movedim(self.dim, 0)
        )


def _map_tensors(out: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor of ``dim`` > 0 in a tensor, tuple or dict."""
    if isinstance(out, torch.Tensor):
        return fn(out) if out.dim() > 1 else out
    if isinstance(out, Mapping):
        return type(out)({k: _map_tensors(v, fn) for k, v in out.items()})
    if isinstance(out, (tuple, list)):
        return type(out)(_map_tensors(v, fn) for v in out)
    return out


def _batched(v: Any, B: int) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() > 0 and len(v) == B


def _output(out: Any, B: Optional[int] = None) -> torch.Tensor:
    """The tensor to compare: ``logits``, ``last_hidden_state``, else the first tensor
    whose dim 0 is the batch ``B`` (a scalar loss returned first is skipped)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        for key in ("logits", "last_hidden_state"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        tensors = [v for v in out if isinstance(v, torch.Tensor)]
        batched = [v for v in tensors if v.dim() and (B is None or len(v) == B)]
        if batched or tensors:
            return (batched or tensors)[0]
    raise TypeError(
        "expected the model to return a tensor, a tuple or a dict of tensors, "
        f"got {type(out).__name__}"
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are 0)."""
    a, b = a.detach().double(), b.detach().double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    den = float(b.norm())
    num = float((a - b).norm())
    return num / den if den > 0 else num


def _perturbed(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Fresh values like ``x``: ids from those present, floats ~ N(mean, std)."""
    if x.dtype == torch.bool:
        raise TypeError(
            "expected the primary input to be ids or floats, got a bool tensor"
        )
    if not x.is_floating_point():
        vocab = x.unique()
        if len(vocab) < 2:
            raise ValueError(
                "expected at least 2 distinct ids in the example batch, "
                f"got {vocab.tolist()}"
            )
        return vocab[torch.randint(len(vocab), x.shape, generator=g)].to(x.device)
    std = float(x.std()) if x.numel() > 1 and float(x.std()) > 0 else 1.0
    return (
        torch.randn(x.shape, generator=g, dtype=x.dtype) * std + float(x.mean())
    ).to(x.device)


def _describe(inp: _Inputs) -> str:
    def d(v: Any) -> str:
        return (
            f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
            if isinstance(v, torch.Tensor)
            else type(v).__name__
        )

    parts = [d(a) for a in inp.args] + [f"{k}={d(v)}" for k, v in inp.kwargs.items()]
    return ", ".join(parts)


def _cast(inp: _Inputs, dtype: torch.dtype) -> _Inputs:
    """The inputs with every floating-point tensor cast to ``dtype``."""
    f = lambda v: (  # noqa: E731
        v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
    )
    return _Inputs(
        [f(a) for a in inp.args], {k: f(v) for k, v in inp.kwargs.items()}, inp.primary
    )


def _pad(
    inp: _Inputs, spec: PaddingSpec, k: int, side: str
) -> tuple[_Inputs, torch.Tensor, torch.Tensor]:
    """Pad each (B, T, ...) input by ``k`` on ``side``.

    Returns the padded inputs, the bool (B, T + k) pad mask (the example's own pads
    included) and the index of the original T positions in the padded sequence.
    """
    x = inp.get()
    B, T = x.shape[:2]

    def cat(a: torch.Tensor, fill: float) -> torch.Tensor:
        b = torch.full((B, k, *a.shape[2:]), fill, dtype=a.dtype, device=a.device)
        return torch.cat([a, b] if side == "right" else [b, a], dim=1)

    kw = {}
    for name, v in inp.kwargs.items():  # other per-token inputs (e.g. token types)
        per_token = isinstance(v, torch.Tensor) and v.dim() >= 2
        if name != spec.mask_arg and per_token and v.shape[:2] == (B, T):
            kw[name] = cat(v, 0)
    pad = cat(_base_pad(inp, spec), True)
    kw[spec.mask_arg] = spec.mask(pad, inp.kwargs.get(spec.mask_arg))
    if spec.extra is not None:
        kw.update(spec.extra(pad))
    orig = torch.arange(T) + (0 if side == "right" else k)
    return inp.replace(cat(x, spec.pad_value), **kw), pad, orig


def _base_pad(inp: _Inputs, spec: PaddingSpec) -> torch.Tensor:
    """The example's own pads, bool (B, T), from its mask (none if it has no mask)."""
    x, m = inp.get(), inp.kwargs.get(spec.mask_arg)
    if m is None:
        return torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    if tuple(m.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"expected {spec.mask_arg} of shape {tuple(x.shape[:2])}, "
            f"got {tuple(m.shape)}"
        )
    return (
        m.bool()
        if spec.pad_is is True
        else (~m.bool() if spec.pad_is is False else m == int(spec.pad_is))
    )


def _expand(pad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B, T) mask broadcast to the shape of a (B, T, ...) tensor."""
    return pad.view(*pad.shape, *([1] * (like.dim() - 2))).expand_as(like)
