"""``lnbn-audit``: the auditor's command line (``--help`` imports no torch).

The parser lives here, outside ``lnbn_utils``, so that ``lnbn-audit --help`` answers
before torch is imported; the audit itself is ``lnbn_utils.audit``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

__all__ = ["build_parser", "main", "EXAMPLES"]

# Each example runs as written (tests/test_audit_cli.py executes every one).
EXAMPLES = (
    "lnbn-audit hf:GPT2Config --config "
    """'{"n_layer": 2, "n_embd": 64, "n_head": 4}' """
    "--model-class GPT2LMHeadModel --mask-arg attention_mask",
    "lnbn-audit lnbn_utils.audit.examples:tiny_transformer "
    """--config '{"norm": "batch"}' --require batch:eval""",
    "lnbn-audit hf:BertConfig --config "
    """'{"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, """
    """"intermediate_size": 128}' --mask-arg attention_mask --pad-sides right,left """
    "--position-ids --json",
)


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (no torch import: ``--help`` is instant)."""
    p = argparse.ArgumentParser(
        prog="lnbn-audit",
        description=(
            "Audit a model for batch coupling, causal leakage, padding invariance and "
            "train/eval discrepancy, in train and eval mode, and list its norm layers. "
            "Exit status: 0 if every required property holds, 1 if one fails, "
            "2 on bad usage or when the model cannot be built or run."
        ),
        epilog=("examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        help="'pkg.module:factory' (returns a model or (model, example_inputs)) "
        "or 'hf:SomeConfig' (a transformers config, random weights, no download)",
    )
    p.add_argument(
        "--config",
        default="{}",
        help="JSON dict: keyword arguments for the factory or the config",
    )
    p.add_argument(
        "--model-class",
        default=None,
        help="transformers model class for hf: (default AutoModel)",
    )
    p.add_argument(
        "--inputs",
        default=None,
        help="random example inputs: ids:B,T[:VOCAB], float:B,T,C or "
        "image:B,C,H,W (default: from the factory, or guessed from the hf config)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=4,
        help="batch size of guessed hf inputs (default 4)",
    )
    p.add_argument(
        "--length",
        type=int,
        default=16,
        help="sequence length of guessed hf inputs (default 16)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="local directory of a saved transformers model (from_pretrained, "
        "offline); with hf:, instead of random weights",
    )
    p.add_argument(
        "--primary",
        default=None,
        help="the input whose dim 0 is the batch (default: the model's "
        "main_input_name, else input_ids, pixel_values, ...); e.g. decoder_input_ids",
    )
    p.add_argument(
        "--batch-dim",
        type=int,
        default=0,
        help="the dim of the primary input and the outputs that is the batch "
        "(e.g. 1 for nn.TransformerEncoderLayer(batch_first=False))",
    )
    p.add_argument(
        "--output",
        default=None,
        help="which output to compare (a key such as logits_per_text, or an index; "
        "default logits, last_hidden_state, else the first batched tensor)",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float64", "float16", "bfloat16"),
        help="audit a copy of the model in this dtype",
    )
    p.add_argument(
        "--properties",
        default=None,
        help="comma list from batch,batch_size,causal,padding,train_eval "
        "(default: all that apply)",
    )
    p.add_argument(
        "--modes",
        default="train,eval",
        help="comma list from train,eval (default both)",
    )
    causal = p.add_mutually_exclusive_group()
    causal.add_argument(
        "--causal",
        dest="causal",
        action="store_true",
        default=None,
        help="treat the model as causal (default: detect)",
    )
    causal.add_argument(
        "--not-causal",
        dest="causal",
        action="store_false",
        help="treat it as not causal",
    )
    p.add_argument(
        "--mask-arg",
        default=None,
        help="keyword that takes the padding mask; enables the "
        "padding check (attention_mask, padding_mask, src_key_padding_mask, ...)",
    )
    p.add_argument(
        "--pad-is",
        default="0",
        help="mask value marking a pad: 0 (Hugging Face, default), "
        "1, true (PyTorch key_padding_mask) or false",
    )
    p.add_argument(
        "--pad-value",
        type=float,
        default=0,
        help="value of padded input positions (default 0)",
    )
    p.add_argument(
        "--pad-sides",
        default="right",
        help="comma list from right,left (default right)",
    )
    p.add_argument(
        "--pad-length", type=int, default=None, help="pads added (default T // 2)"
    )
    p.add_argument(
        "--position-ids",
        action="store_true",
        help="pass position_ids = cumsum(mask) - 1 with every padded batch (what "
        "left-padded generation needs)",
    )
    p.add_argument(
        "--max-cuts",
        type=int,
        default=32,
        help="cut points of the causal check: every one up to this many, else an "
        "even spread (default 32)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=3,
        help="partner perturbations for the batch check (default 3)",
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="relative change under which a property holds (default 1e-5, about "
        "2e-14 for float64 outputs; raised to 10x the measured float floor)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for weights, inputs, perturbations and dropout (default 0)",
    )
    p.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="PROP[:MODE]",
        help="exit 1 if this property fails, e.g. batch:eval, padding, causal:train "
        "(repeatable; default: nothing required, exit 0)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON instead of a table",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the command line, then run the audit; returns the exit status."""
    args = build_parser().parse_args(argv)
    from lnbn_utils.audit.cli import run

    return run(args, build_parser())


if __name__ == "__main__":
    sys.exit(main())
