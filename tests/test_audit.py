"""The auditor against models with known answers: the book's norms and tiny models."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import lnbn_utils as lu
from lnbn_utils import audit as A

PAD = lu.PaddingSpec("padding_mask", pad_is=True)  # the book's convention: True = pad


def tiny(
    norm: str, causal: bool = True, position: str = "learned"
) -> lu.TinyTransformer:
    torch.manual_seed(0)
    cfg = lu.TransformerConfig(
        vocab_size=16,
        block_size=24,
        n_layer=1,
        n_head=2,
        n_embd=16,
        norm=norm,
        causal=causal,
        position=position,
    )
    return lu.TinyTransformer(cfg)


def ids(B: int = 4, T: int = 12) -> torch.Tensor:
    return torch.randint(1, 16, (B, T), generator=torch.Generator().manual_seed(1))


def test_audit_model_is_a_function_and_audit_the_package():
    assert lu.audit_model is A.audit_model and lu.PaddingSpec is A.PaddingSpec
    assert isinstance(A, types.ModuleType) and not callable(A)
    report = lu.audit_model(tiny("layer"), ids(), trials=1)
    assert isinstance(report, lu.AuditReport)


def test_layernorm_model_couples_nothing_and_leaks_nothing():
    report = lu.audit_model(tiny("layer"), {"idx": ids()}, padding=PAD)
    for mode in ("train", "eval"):
        for prop in ("batch", "causal", "padding:length", "padding:values"):
            c = report.get(prop, mode)
            assert c.holds, c
            assert c.change == 0 or prop == "padding:length", (
                c
            )  # longer T: other kernels
    assert report.get("train_eval", "train->eval").holds


def test_batchnorm_couples_and_leaks_in_train_mode_only():
    report = lu.audit_model(tiny("batch"), ids())
    for prop in ("batch", "causal"):
        train, ev = report.get(prop, "train"), report.get(prop, "eval")
        assert not train.holds and train.change > 1e-3, train
        assert ev.holds and ev.change == 0, ev
    assert not report.get("train_eval", "train->eval").holds
    assert {r["kind"] for r in report.inventory} == {"BatchNorm subclass"}


def test_masked_batchnorm_is_pad_invariant_and_naive_batchnorm_is_not():
    masked = lu.audit_model(
        tiny("masked_batch"), {"idx": ids()}, padding=PAD, properties=["padding"]
    )
    naive = lu.audit_model(
        tiny("batch"), {"idx": ids()}, padding=PAD, properties=["padding"]
    )
    for prop in ("padding:length", "padding:values"):
        assert masked.get(prop, "train").holds, masked.get(prop, "train")
        assert not naive.get(prop, "train").holds, naive.get(prop, "train")
        assert naive.get(prop, "eval").holds  # running statistics ignore the batch


def test_left_padding_breaks_learned_positions_not_position_free_models():
    left = lu.PaddingSpec("padding_mask", True, sides=("right", "left"))
    learned = lu.audit_model(
        tiny("layer"),
        {"idx": ids()},
        padding=left,
        properties=["padding"],
        modes=["eval"],
    )
    free = lu.audit_model(
        tiny("layer", position="none"),
        {"idx": ids()},
        padding=left,
        properties=["padding"],
        modes=["eval"],
    )
    assert not learned.get("padding:left", "eval").holds
    assert free.get("padding:left", "eval").holds


def test_dropout_is_not_counted_as_coupling():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.5), nn.Linear(32, 8))
    x = torch.randn(4, 8)
    c = lu.audit_model(model, x, properties=["batch"]).get("batch", "train")
    assert c.holds and c.change == 0, c
    assert c.uncontrolled > 0.1, c  # two forwards with different dropout masks differ


def test_float_floor_is_measured_and_reported():
    report = lu.audit_model(tiny("masked_batch"), {"idx": ids()}, properties=["batch"])
    c = report.get("batch", "train")
    assert 0 <= c.floor < 1e-5 and c.tol == max(1e-5, 10 * c.floor), c


class Mix(nn.Module):
    """Example i gets ``w`` times a batch-wide term: coupling of known, tiny size."""

    def __init__(self, w: float, how: str) -> None:
        super().__init__()
        self.w, self.how = w, how
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        other = h.flip(0) if self.how == "flip" else h.mean(0, keepdim=True)
        return h + self.w * other


@pytest.mark.parametrize("w", [1e-3, 1e-4, 3e-5])
def test_small_order_dependent_coupling_is_not_absorbed_by_the_floor(w):
    # regression: the floor used to be "move the example one slot" (a batch roll),
    # which an order-dependent model's own coupling inflates: with w = 1e-4 the
    # floor was 8e-5, the tolerance 8e-4, and a real coupling passed as float noise.
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    c = lu.audit_model(Mix(w, "flip"), x, properties=["batch"], modes=["eval"]).get(
        "batch", "eval"
    )
    assert not c.holds and c.floor < 1e-6, c


def test_mirror_model_fails():
    class Mirror(nn.Module):  # example i sees example B-1-i: depends on batch order
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + x.flip(0)

    c = lu.audit_model(
        Mirror(), torch.randn(4, 8), properties=["batch"], modes=["eval"]
    ).get("batch", "eval")
    assert not c.holds and c.change > 0.1, c


def test_float64_model_tiny_coupling_fails_and_float32_label_is_honest():
    # regression: rtol was 1e-5 whatever the dtype, so a float64 model whose outputs
    # move by 1e-6 with their partners (1e10 x its rounding) "held (float noise)".
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    c64 = lu.audit_model(
        Mix(1e-6, "mean").double(), x.double(), properties=["batch"], modes=["eval"]
    ).get("batch", "eval")
    assert not c64.holds and c64.floor < 1e-14 and c64.tol < 1e-13, c64
    # float32: a 1e-5 mix is above the floor but may sit under rtol; if it holds,
    # the verdict must not call it float noise
    for w in (1e-5, 1e-6):
        c32 = lu.audit_model(
            Mix(w, "mean"), x, properties=["batch"], modes=["eval"], rtol=1e-4
        ).get("batch", "eval")
        assert c32.holds, c32
        noise = c32.change <= 10 * c32.floor
        assert c32.verdict == (
            "holds (within 10x floor)" if noise else "holds (below rtol)"
        )
    big = lu.audit_model(Mix(1e-5, "mean"), x, properties=["batch"], rtol=1e-4)
    assert big.get("batch", "eval").verdict == "holds (below rtol)", big.checks


def test_random_layers_besides_dropout():
    # regression: noise drawn in forward (torch.randn_like) made the roll floor 0.6,
    # above its cap, so a model with no coupling at all FAILED the batch check.
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.lin(x)
            return h + 0.1 * torch.randn_like(h) if self.training else h

    x = torch.randn(4, 8)
    c = lu.audit_model(Noisy(), x, properties=["batch"]).get("batch", "train")
    assert c.holds and c.change == 0 and c.uncontrolled > 0.01, c
    assert "random beyond dropout" in c.note, c
    # nn.RReLU draws one slope per negative entry, in order: the draws an example gets
    # depend on its partners' signs, so its output does move with them (a real
    # dependence, via the random stream); the note says why
    rrelu = nn.Sequential(nn.Linear(8, 8), nn.RReLU(), nn.Linear(8, 8))
    c = lu.audit_model(rrelu, x, properties=["batch"]).get("batch", "train")
    assert "random beyond dropout" in c.note, c
    assert (
        lu.audit_model(rrelu, x, properties=["batch"]).get("batch", "eval").change == 0
    )


def test_per_example_norms_and_huge_batch_norm():
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for norm in (nn.GroupNorm(2, 8), nn.InstanceNorm2d(8, affine=True)):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), norm)
        r = lu.audit_model(model, x, properties=["batch"])
        assert all(c.holds and c.change == 0 for c in r.checks), r.checks
    bn = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))  # 1/sqrt(B) still ~ 1e-2
    big = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
    c = lu.audit_model(bn, big, properties=["batch"], trials=1).get("batch", "train")
    assert not c.holds and c.change > 100 * c.tol, c
    c2 = lu.audit_model(bn, big[:2], properties=["batch"]).get("batch", "train")
    assert not c2.holds, c2  # the smallest batch the audit accepts


def test_causal_leak_between_neighbours_is_always_found():
    # regression: 3 random cut points found a leak from position T-1 to T-2 in 4 of 20
    # seeds; every cut point is now tried
    class LeakOne(nn.Module):
        is_causal = True

        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(16, 8)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            h = self.emb(idx).cumsum(1)  # (B, T, C), causal
            leak = torch.zeros_like(h)
            leak[:, -2] = self.emb(idx[:, -1])  # position T-2 reads position T-1
            return h + leak

    for seed in range(5):
        r = lu.audit_model(
            LeakOne(), ids(T=16), properties=["causal"], modes=["eval"], seed=seed
        )
        assert not r.get("causal", "eval").holds, seed


def test_outputs_as_tuple_dict_with_a_scalar_loss_first():
    # regression: a tuple (loss, output) made the audit index a 0-dim tensor
    class Tup(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(8)

        def forward(self, x: torch.Tensor) -> tuple:
            y = self.bn(x)
            return y.square().mean(), y

    class Dct(Tup):
        def forward(self, x: torch.Tensor) -> dict:
            y = self.bn(x)
            return {"loss": y.square().mean(), "embeddings": y}

    for model in (Tup(), Dct()):
        r = lu.audit_model(model, torch.randn(4, 8), properties=["batch"])
        assert not r.get("batch", "train").holds and r.get("batch", "eval").holds


def test_audit_restores_running_stats_and_modes():
    model = tiny("batch").eval()
    before = {k: v.clone() for k, v in model.named_buffers()}
    lu.audit_model(model, ids())
    assert not model.training
    for k, v in model.named_buffers():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_inventory_by_type_and_by_behaviour():
    class OddNorm(nn.Module):  # unknown class, batch statistics
        def __init__(self, C: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(C))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - x.mean(dim=(0, 1))) * self.weight

    class TokenNorm(OddNorm):  # unknown class, per-token statistics
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - x.mean(-1, keepdim=True)) * self.weight

    model = nn.Sequential(
        nn.BatchNorm1d(8), nn.LayerNorm(8), nn.GroupNorm(2, 8), OddNorm(8), TokenNorm(8)
    )
    kinds = {r["class"]: r["kind"] for r in lu.norm_inventory(model)}
    assert kinds == {
        "BatchNorm1d": "BatchNorm",
        "LayerNorm": "LayerNorm",
        "GroupNorm": "GroupNorm",
        "OddNorm": "batch statistics (probed)",
        "TokenNorm": "per-example (probed)",
    }
    masked = {r["class"]: r["kind"] for r in lu.norm_inventory(tiny("masked_batch"))}
    assert masked == {"MaskedBatchNorm": "BatchNorm subclass"}  # BATCHNORM_CLASSES


def test_table_and_json_and_failures():
    report = lu.audit_model(tiny("batch"), ids(), trials=1)
    text = report.table()
    assert "batch" in text and "FAILS" in text and "TokenBatchNorm" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert {c["verdict"] for c in d["checks"]} >= {"FAILS", "holds (bitwise)"}
    assert [c.mode for c in report.failures(["batch"])] == ["train"]
    assert report.failures(["batch:eval"]) == []
    with pytest.raises(ValueError, match="expected a measured property"):
        report.failures(["padding"])


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    model = tiny("layer")
    with pytest.raises(TypeError, match="expected model to be a torch.nn.Module"):
        lu.audit_model(lambda x: x, ids())
    with pytest.raises(TypeError, match="expected example_inputs"):
        lu.audit_model(model, 3)
    with pytest.raises(ValueError, match="at least 2 examples"):
        lu.audit_model(model, ids(B=1))
    with pytest.raises(ValueError, match="expected properties from"):
        lu.audit_model(model, ids(), properties=["speed"])
    with pytest.raises(ValueError, match="expected modes from"):
        lu.audit_model(model, ids(), modes=["test"])
    with pytest.raises(ValueError, match="needs the model's mask convention"):
        lu.audit_model(model, ids(), properties=["padding"])
    with pytest.raises(ValueError, match="expected trials >= 1"):
        lu.audit_model(model, ids(), trials=0)
    with pytest.raises(ValueError, match="expected sides"):
        lu.PaddingSpec(sides=("top",))


def test_causal_check_on_a_non_causal_model_is_an_error():
    with pytest.raises(ValueError, match="applies only to causal models"):
        lu.audit_model(tiny("layer", causal=False), ids(), properties=["causal"])
    report = lu.audit_model(
        tiny("layer", causal=False),
        ids(),
        properties=["causal"],
        causal=True,
        modes=["eval"],
    )
    assert not report.get(
        "causal", "eval"
    ).holds  # bidirectional attention reads the future


def test_model_that_rejects_the_inputs():
    with pytest.raises(
        ValueError, match=r"accept the audit's inputs \(\(4, 12\) float32\)"
    ):
        lu.audit_model(tiny("layer"), torch.randn(4, 12))


# --------------------------------------------------------------------- loading and CLI


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "audit_factories.py").write_text(
        "import torch, lnbn_utils as lu\n"
        "def make(norm='batch'):\n"
        "    torch.manual_seed(0)\n"
        "    cfg = lu.TransformerConfig(vocab_size=16, block_size=16, n_layer=1,\n"
        "                               n_head=2, n_embd=16, norm=norm)\n"
        "    return lu.TinyTransformer(cfg), torch.randint(1, 16, (4, 8))\n"
        "not_a_model = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "audit_factories"


def test_load_model_errors(factory_module):
    model, example = A.load_model(f"{factory_module}:make", {"norm": "layer"})
    assert isinstance(model, lu.TinyTransformer) and example.shape == (4, 8)
    for spec, err, msg in [
        ("no_colon", ValueError, "expected 'module:factory'"),
        ("no_such_module_xyz:make", ValueError, "could not import module"),
        (f"{factory_module}:missing", ValueError, "has no attribute"),
        (f"{factory_module}:not_a_model", TypeError, "to give an nn.Module"),
    ]:
        with pytest.raises(err, match=msg):
            A.load_model(spec)


def test_cli_exit_codes_and_json(factory_module, capsys):
    spec = f"{factory_module}:make"
    assert (
        A.main(
            [spec, "--trials", "1", "--require", "batch:eval", "--progress", "never"]
        )
        == 0
    )
    assert "TokenBatchNorm" in capsys.readouterr().out
    assert A.main([spec, "--trials", "1", "--require", "batch:train", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["causal"] is True and any(c["verdict"] == "FAILS" for c in out["checks"])
    assert (
        A.main(
            [
                spec,
                "--config",
                '{"norm": "layer"}',
                "--require",
                "batch",
                "--require",
                "causal",
            ]
        )
        == 0
    )
    with pytest.raises(SystemExit) as e:
        A.main(["nowhere_xyz:make"])
    assert e.value.code == 2 and "could not import" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        A.main([spec, "--properties", "causal", "--not-causal"])
    assert e.value.code == 2 and "only to causal models" in capsys.readouterr().err


def test_help_documents_every_option():
    from lnbn_audit import build_parser

    text = build_parser().format_help()
    for action in build_parser()._actions:
        for opt in action.option_strings:
            assert opt in text
        assert action.help, action.dest


def test_python_dash_m_runs_cleanly():
    src = str(Path(A.__file__).resolve().parents[1])
    r = subprocess.run(
        [sys.executable, "-m", "lnbn_utils.audit", "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": ""},
        timeout=120,
    )
    assert r.returncode == 0 and "--require" in r.stdout
    assert "RuntimeWarning" not in r.stderr, r.stderr


def test_missing_transformers_gives_install_hint(monkeypatch):
    monkeypatch.setitem(
        sys.modules, "transformers", None
    )  # import transformers -> ImportError
    with pytest.raises(ImportError, match=r"lnbn_utils\[audit\]"):
        A.load_model("hf:GPT2Config")


def test_hugging_face_gpt2_left_padding_bug_and_fix():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=1,
        n_embd=32,
        n_head=2,
        vocab_size=32,
        n_positions=32,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = transformers.GPT2LMHeadModel(cfg)
    x = {"input_ids": torch.randint(1, 32, (3, 8))}
    spec = lu.PaddingSpec("attention_mask", 0, sides=("right", "left"))
    fixed = lu.PaddingSpec(
        "attention_mask",
        0,
        sides=("right", "left"),
        extra=lambda pad: {"position_ids": ((~pad).long().cumsum(1) - 1).clamp(min=0)},
    )
    bug = lu.audit_model(model, x, padding=spec, trials=1)
    fix = lu.audit_model(model, x, padding=fixed, trials=1)
    assert (
        bug.causal
        and bug.get("batch", "train").holds
        and bug.get("batch", "train").uncontrolled > 0
    )
    assert not bug.get("padding:left", "eval").holds
    assert (
        fix.get("padding:left", "eval").holds
        and fix.get("padding:length", "eval").holds
    )


def test_an_example_batch_with_its_own_padding():
    x = ids()
    own = torch.zeros_like(x, dtype=torch.bool)
    own[0, 8:] = True  # example 0 is 8 tokens long
    model = tiny("masked_batch", causal=False)
    kw = dict(padding=PAD, properties=["padding"])
    masked = lu.audit_model(model, {"idx": x, "padding_mask": own}, **kw)
    naive = lu.audit_model(
        tiny("batch", causal=False), {"idx": x, "padding_mask": own}, **kw
    )
    for prop in ("padding:length", "padding:values"):
        assert masked.get(prop, "train").holds, masked.get(prop, "train")
        assert not naive.get(prop, "train").holds, naive.get(prop, "train")
    with pytest.raises(ValueError, match="expected padding_mask of shape"):
        lu.audit_model(model, {"idx": x, "padding_mask": own[:, :4]}, **kw)


def test_progress_bar_on_stderr(capsys):
    lu.audit_model(tiny("layer"), ids(), properties=["batch"], trials=1, progress=True)
    err = capsys.readouterr().err
    assert "audit [" in err and err.rstrip().endswith("batch/eval")


def test_json_is_strict_when_a_model_returns_nan(tmp_path, monkeypatch, capsys):
    # regression: --json printed bare Infinity (not JSON) for a model returning nan,
    # and the note blamed "randomness"; a factory that crashed exited 1, the same
    # status as "a required property failed"
    (tmp_path / "audit_bad_factories.py").write_text(
        "import torch, torch.nn as nn\n"
        "class NanBN(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.bn = nn.BatchNorm1d(8)\n"
        "    def forward(self, x):\n"
        "        y = self.bn(x)\n"
        "        return y / (y - y) if self.training else y\n"
        "def nan():\n"
        "    return NanBN(), torch.randn(4, 8)\n"
        "def boom():\n"
        "    raise KeyError('oops')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert A.main(["audit_bad_factories:nan", "--json", "--progress", "never"]) == 0

    def strict(x: str) -> None:
        raise ValueError(f"not JSON: {x}")

    d = json.loads(capsys.readouterr().out, parse_constant=strict)
    train = [c for c in d["checks"] if c["mode"] == "train"][0]
    assert train["change"] is None and train["nonfinite"], train
    assert train["verdict"] == "FAILS" and d["schema_version"] >= 2, d
    assert "non-finite" in train["note"], train
    with pytest.raises(SystemExit) as e:
        A.main(["audit_bad_factories:boom"])
    assert e.value.code == 2 and "KeyError: 'oops'" in capsys.readouterr().err


def test_train_eval_uses_the_measured_floor():
    # regression: train_eval had floor 0, so a float-rounding difference between the
    # modes (nn.TransformerEncoderLayer's fast path in eval) read "below rtol"
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    c = lu.audit_model(layer, torch.randn(4, 8, 16)).get("train_eval", "train->eval")
    assert c.holds and c.floor > 0, c
    assert c.verdict in ("holds (bitwise)", "holds (within 10x floor)"), c


class RealMaskPool(nn.Module):
    """Per-token output plus a masked mean over real tokens; ``mask``: True = real."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(16, 8)

    def forward(self, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx)  # (B, T, C)
        w = mask.to(h.dtype)[..., None]  # (B, T, 1)
        pooled = (h * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        return h + pooled


def test_padding_convention_true_means_real():
    x = ids()
    real = lu.PaddingSpec("mask", pad_is=False, sides=("right", "left"))
    r = lu.audit_model(
        RealMaskPool(),
        {"idx": x, "mask": torch.ones_like(x, dtype=torch.bool)},
        padding=real,
        properties=["padding"],
        modes=["eval"],
    )
    assert all(c.holds for c in r.checks), r.checks
    # the wrong convention (True = pad): the model is told its real tokens are pads
    # (an empty mean, nan) and its pads are real (a mean over the pads): caught
    wrong = lu.PaddingSpec("mask", pad_is=True)
    r = lu.audit_model(
        RealMaskPool(),
        {"idx": x, "mask": torch.zeros_like(x, dtype=torch.bool)},
        padding=wrong,
        properties=["padding"],
        modes=["eval"],
    )
    assert not r.get("padding:values", "eval").holds, r.checks


def test_coupling_into_the_last_example_only_is_found():
    # regression: examples 0, 1, 2 were watched, so with B = 4 a model in which only
    # the last example sees its partners (a running state across the batch) passed
    class LastSeesAll(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.clone()
            y[-1] = y[-1] + x[:-1].mean(0)
            return y

    c = lu.audit_model(
        LastSeesAll(), torch.randn(4, 8), properties=["batch"], trials=2
    ).get("batch", "eval")
    assert not c.holds, c
