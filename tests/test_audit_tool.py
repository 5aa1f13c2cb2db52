"""The auditor as a team adopts it: each test's ground truth is the architecture."""

import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lnbn_utils as lu
from lnbn_utils import audit as A
from lnbn_utils.audit.checks import _cuts


def x48(B: int = 4, T: int = 8, C: int = 8) -> torch.Tensor:
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(0))


class Lin(nn.Module):
    """Per-example: a linear map, plus a batch-wide term of weight ``w``."""

    def __init__(self, w: float = 0.0, C: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.w = nn.Linear(C, C), w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return h + self.w * h.mean(0, keepdim=True)


# 1. reduced precision: the tolerance comes from the measured floor, not the dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_coupling_fails(dtype):
    model = lu.TinyTransformer(lu.TransformerConfig(norm="batch"))
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    r = lu.audit_model(model, ids, properties=["batch"], dtype=dtype)
    assert not r.get("batch", "train").holds, r.table()  # BN couples in train mode
    assert r.get("batch", "eval").holds, r.table()
    c = lu.audit_model(
        Lin(1.0), x48(), properties=["batch"], modes=["eval"], dtype=dtype
    )
    assert not c.get("batch", "eval").holds, c.table()


# 2. randomness beyond nn.Dropout


class NumpyMask(nn.Module):
    """A per-example numpy-drawn mask (SpecAugment-like): no coupling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = np.random.rand(*x.shape[:2]) > 0.3 if self.training else 1.0
        return x * torch.as_tensor(keep, dtype=x.dtype)[..., None]


class FunctionalDropout(nn.Module):
    """Dropout written as F.dropout: the audit cannot switch it off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, p=0.3, training=self.training)


def test_numpy_randomness_is_seeded_and_functional_dropout_is_inconclusive():
    r = lu.audit_model(NumpyMask(), x48(), properties=["batch"], modes=["train"])
    assert r.get("batch", "train").change == 0, r.table()
    r = lu.audit_model(FunctionalDropout(), x48(), properties=["train_eval"])
    c = r.get("train_eval", "train->eval")
    assert c.verdict == "inconclusive" and "dropout off" not in c.note, c
    assert r.failures() == [] and r.inconclusives() == [c]


# 3. outputs shorter than the inputs (audio feature encoders)


class Downsample(nn.Module):
    """A stride-2 conv over time, then GroupNorm over (channels, time) or LayerNorm."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(8, 8, 2, stride=2)
        self.norm = nn.GroupNorm(1, 8) if norm == "group" else nn.LayerNorm(8)

    def forward(self, x: torch.Tensor, attention_mask=None) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2))  # (B, C, T // 2)
        if isinstance(self.norm, nn.GroupNorm):
            return self.norm(h).transpose(1, 2)  # statistics over time: pads count
        return self.norm(h.transpose(1, 2))  # (B, T // 2, C)


def test_output_length_mapping_or_a_clear_error():
    pad = lu.PaddingSpec(pad_value=0.0)
    with pytest.raises(ValueError, match="output_length"):
        lu.audit_model(Downsample("group"), x48(), padding=pad, properties=["padding"])
    mapped = lu.PaddingSpec(pad_value=0.0, output_length=lambda T: T // 2)
    kw = {"padding": mapped, "properties": ["padding"], "modes": ["eval"]}
    group = lu.audit_model(Downsample("group"), x48(), **kw)
    layer = lu.audit_model(Downsample("layer"), x48(), **kw)
    assert not group.get("padding:length", "eval").holds, group.table()
    assert layer.get("padding:length", "eval").holds, layer.table()


# 4. encoder-decoder models are not auto-detected as causal


def test_encoder_decoder_is_not_detected_as_causal():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BartConfig(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=50,
        max_position_embeddings=32,
    )
    model = transformers.BartModel(cfg)
    assert not A.checks._is_causal(model)


def test_decoder_only_base_models_are_detected_as_causal():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BloomConfig(n_layer=1, hidden_size=16, n_head=2, vocab_size=50)
    torch.manual_seed(0)
    model = transformers.BloomModel(cfg)  # no is_causal attribute anywhere
    assert A.checks._is_causal(model)
    r = lu.audit_model(model, torch.randint(0, 50, (4, 8)), properties=["causal"])
    assert r.causal and r.failures() == [], r.table()  # ALiBi + causal mask: no leak


# 5. layers that keep state between forwards


class Stateful(nn.Module):
    """Adds a running counter updated by every training forward: no coupling."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("step", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.step
        if self.training:
            self.step += 1.0
        return y


def test_state_between_forwards_is_not_coupling():
    r = lu.audit_model(Stateful(), x48(), properties=["batch", "causal"], causal=True)
    assert r.failures() == [], r.table()


# 6. the batch-size check


class ScalesByBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = Lin()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * (1 + 0.01 * len(x))


def test_batch_size_dependence_is_found():
    r = lu.audit_model(ScalesByBatch(), x48(), properties=["batch", "batch_size"])
    assert r.get("batch", "eval").bitwise, r.table()  # partners do not matter
    assert not r.get("batch_size", "eval").holds, r.table()  # their number does
    assert not r.get("batch_size", "train").holds, r.table()


# 7. bitwise identity is its own column


def test_tiny_same_shape_coupling_is_not_called_bitwise():
    r = lu.audit_model(Lin(1e-6), x48(), properties=["batch"], modes=["eval"])
    c = r.get("batch", "eval")
    assert not c.bitwise and c.verdict != "holds (bitwise)", c
    assert "bitwise" in r.table() and r.to_dict()["checks"][0]["bitwise"] is False
    with pytest.raises(AssertionError, match="not bitwise"):
        lu.assert_batch_independent(Lin(1e-6), x48(), bitwise=True)


# 8. main input, output choice


class TwoOutputs(nn.Module):
    main_input_name = "input_values"

    def __init__(self) -> None:
        super().__init__()
        self.lin = Lin()

    def forward(self, attention_mask, input_values):
        h = self.lin(input_values)
        return {"logits": h + h.mean(0), "own": h}


def test_main_input_name_and_output_choice():
    x = {"attention_mask": torch.ones(4, 8, dtype=torch.long), "input_values": x48()}
    coupled = lu.audit_model(TwoOutputs(), x, properties=["batch"], modes=["eval"])
    own = lu.audit_model(
        TwoOutputs(), x, properties=["batch"], modes=["eval"], output="own"
    )
    assert "input_values" in coupled.shape
    assert not coupled.get("batch", "eval").holds and own.get("batch", "eval").holds
    assert "'own'" in own.table()


def test_batch_dim_reads_a_sequence_first_layer_as_independent():
    # nn.TransformerEncoderLayer(batch_first=False) takes (T, B, C): the batch is
    # dim 1, and the layer is per-example (LayerNorm, attention within a sequence)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
    src = torch.randn(8, 4, 16)  # (T, B, C)
    pad = torch.arange(8) >= torch.tensor([8, 6, 5, 7])[:, None]  # (B, T), True = pad
    x = {"src": src, "src_key_padding_mask": pad}
    spec = lu.PaddingSpec("src_key_padding_mask", True, sides=("right", "left"))
    kw = dict(properties=["batch", "batch_size", "padding"], padding=spec)
    with pytest.raises(ValueError, match="src_key_padding_mask"):
        lu.audit_model(layer, x, **kw)  # read batch-first, T=4 does not fit the mask
    wrong = lu.audit_model(layer, {"src": src}, properties=["batch"])
    assert not wrong.get("batch", "eval").holds, wrong.table()  # T read as batch
    r = lu.audit_model(layer, x, batch_dim=1, **kw)
    assert r.failures() == [], r.table()
    assert r.get("batch", "eval").bitwise and r.settings["batch_dim"] == 1
    with pytest.raises(ValueError, match="batch_dim"):
        lu.audit_model(layer, x, batch_dim=3)


# 9. coupling through other batched inputs (a batch-wide key mask)


class BatchWideMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = Lin()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pad_anywhere = (attention_mask == 0).any(0)  # (T,): a batch-wide mask
        h = self.lin(x).masked_fill(pad_anywhere[None, :, None], 0.0)
        return h.cumsum(1)


def test_partners_masks_are_perturbed_too():
    x = {"x": x48(), "attention_mask": torch.ones(4, 8, dtype=torch.long)}
    r = lu.audit_model(BatchWideMask(), x, properties=["batch"], modes=["eval"])
    assert not r.get("batch", "eval").holds, r.table()


# 10. inventory, JSON, error messages


def test_inventory_lists_only_norms_and_bn_without_running_stats():
    model = nn.Sequential(
        nn.utils.parametrizations.weight_norm(nn.Linear(8, 8)),
        nn.Conv2d(3, 3, 1),
        nn.BatchNorm2d(3, track_running_stats=False),
    )
    rows = lu.norm_inventory(model)
    assert [r["class"] for r in rows] == ["BatchNorm2d"], rows
    assert "eval" in rows[0]["spans"], rows


def test_model_returning_an_odd_type_is_blamed_not_the_inputs():
    class Odd(nn.Module):
        def forward(self, x):
            return "not a tensor"

    with pytest.raises(TypeError, match="expected the model to return"):
        lu.audit_model(Odd(), x48())


# 11. cost and startup


def test_causal_cut_budget():
    assert _cuts(8) == list(range(1, 8))
    cuts = _cuts(200, 32)
    assert len(cuts) == 32 and cuts[0] == 1 and cuts[-1] == 199


class LeakAt(nn.Module):
    """Per-example, and causal except that position 5 reads position 6."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.calls = Lin(), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = self.lin(x).cumsum(1)  # (B, T, C): causal
        return h + F.pad(x[:, 6:7], (0, 0, 5, x.shape[1] - 6))  # x[:, 6] into pos 5


def test_per_example_cuts_find_a_single_leak_with_fewer_forwards():
    model, x = LeakAt(), x48(T=16)
    kw = dict(properties=["batch", "causal"], modes=["eval"], causal=True)
    r = lu.audit_model(model, x, **kw)
    assert r.get("batch", "eval").bitwise and not r.get("causal", "eval").holds
    per_example = model.calls
    model.calls = 0
    lu.audit_model(model, x, properties=["causal"], modes=["eval"], causal=True)
    # forwards of this model (the floor's float64 copy counts its own): floor 2,
    # batch 1 + 2 x 3 trials, causal 1 + the cuts: 15 cuts in 4 forwards of 4
    # examples, or (without the batch check) 15 forwards
    assert (per_example, model.calls) == (2 + 7 + 1 + 4, 2 + 1 + 15)


def test_help_imports_no_torch():
    code = (
        "import sys, lnbn_audit\n"
        "try:\n    lnbn_audit.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().endswith("NO TORCH"), r.stdout + r.stderr


# the pytest helpers


def test_assert_helpers_pass_and_fail_readably():
    report = lu.assert_batch_independent(Lin(), x48())
    assert report.get("batch", "eval").bitwise
    with pytest.raises(AssertionError) as e:
        lu.assert_batch_independent(ScalesByBatch(), x48())
    assert "batch_size in eval mode" in str(e.value) and "floor" in str(e.value)
    bn = lu.TinyTransformer(lu.TransformerConfig(norm="batch"))
    ids = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(0))
    lu.assert_audit(bn, ids, require=["batch:eval", "causal:eval"])
    with pytest.raises(AssertionError, match="causal in train mode"):
        lu.assert_audit(bn, ids, require=["causal"])


# documented command lines run as written


@pytest.mark.parametrize("example", __import__("lnbn_audit").EXAMPLES)
def test_documented_examples_run(example, capsys):
    pytest.importorskip("transformers")
    argv = shlex.split(example)
    assert argv[0] == "lnbn-audit"
    assert A.main([*argv[1:], "--progress", "never"]) == 0
    out = capsys.readouterr().out
    if "--json" in argv:
        assert json.loads(out)["schema_version"] >= 2


def test_json_is_reproducible(capsys):
    pytest.importorskip("transformers")
    argv = ["hf:GPT2Config", "--config", '{"n_layer": 1, "n_embd": 16, "n_head": 2}']
    argv += ["--json", "--progress", "never", "--properties", "batch"]
    runs = []
    for _ in range(2):
        assert A.main(argv) == 0
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1]


def test_chapter_6_shows_only_examples_that_the_tests_run():
    from pathlib import Path

    import lnbn_audit

    nb = json.loads(
        Path(__file__)
        .parents[1]
        .joinpath("book", "06_audit_your_model.ipynb")
        .read_text()
    )
    shown = [
        line.strip()
        for c in nb["cells"]
        if c["cell_type"] == "markdown"
        for line in "".join(c["source"]).splitlines()
        if line.strip().startswith("lnbn-audit ")
    ]
    assert shown and set(shown) <= set(lnbn_audit.EXAMPLES), shown
