"""Audit a model for batch coupling, batch-size dependence, causal leaks, padding
dependence and train/eval gaps.

    import lnbn_utils as lu
    report = lu.audit_model(model, tokens)
    print(report.table())
    lu.assert_batch_independent(model, tokens)  # in a team's own pytest suite

or from a shell (``lnbn-audit --help`` lists every option and runnable examples)::

    lnbn-audit hf:GPT2Config --config '{"n_layer": 2, "n_embd": 64, "n_head": 4}'

Every verdict comes from perturbation tests on the example batch you give:

* **batch** (cross-example dependence): replace every other example of the batch (its
  primary input and its other batched inputs, such as masks) and measure how much one
  example's output moves (relative change, ``||dy|| / ||y||``).
* **batch_size**: the example alone, in its batch of B, and in a batch of 2B.
* **causal** (causal models only): replace the inputs after a cut point ``t`` and
  measure how much the outputs before ``t`` move.
* **padding**: add pads, change what the pads hold, or pad on the left, and measure
  how much the outputs at the real positions move.
* **train_eval**: the same batch in training and in inference mode.
* an **inventory** of the normalization layers.

Both forwards of a comparison run from the same random state (torch, numpy and
Python's ``random`` seeded), and from the same buffers (restored after every forward).
The *floor* is the relative rounding error of the forward on the example batch,
measured against a float64 copy of the model. A model that is random beyond what the
seeds control gets "inconclusive" where its change exceeds the tolerance. Every check
reports whether the outputs were identical bit for bit.
"""

from .api import assert_audit, assert_batch_independent, audit, audit_model
from .checks import dropout_off
from .cli import example_for, load_model, main
from .inputs import PaddingSpec
from .inventory import norm_inventory
from .report import AuditReport, CheckResult

__all__ = [
    "audit_model",
    "audit",
    "assert_audit",
    "assert_batch_independent",
    "AuditReport",
    "CheckResult",
    "PaddingSpec",
    "norm_inventory",
    "dropout_off",
    "load_model",
    "example_for",
    "main",
]
