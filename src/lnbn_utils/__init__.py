# ruff: noqa: F405  (__all__ names the star-imported public names)
"""lnbn_utils: the small library behind "Why Transformers use LayerNorm, not BatchNorm".

import lnbn_utils as lu
norm = lu.make_norm("masked_batch", 32)
"""

from . import (  # noqa: F401
    batching,
    charlm_experiment,
    data,
    distributed,
    findings,
    folding,
    glue,
    jacobian,
    masking,
    memory,
    models,
    norms,
    parallel_experiment,
    plotting,
    probes,
    recalibrate,
    repaired_norms,
    repro,
    stats,
    tasks,
    timing,
    train,
)
from .batching import *  # noqa: F401,F403
from .charlm_experiment import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .distributed import *  # noqa: F401,F403
from .findings import *  # noqa: F401,F403
from .folding import *  # noqa: F401,F403
from .glue import *  # noqa: F401,F403
from .jacobian import *  # noqa: F401,F403
from .masking import *  # noqa: F401,F403
from .memory import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .norms import *  # noqa: F401,F403
from .parallel_experiment import *  # noqa: F401,F403
from .plotting import *  # noqa: F401,F403
from .probes import *  # noqa: F401,F403
from .recalibrate import *  # noqa: F401,F403
from .repaired_norms import *  # noqa: F401,F403
from .reported import *  # noqa: F401,F403
from .repro import *  # noqa: F401,F403
from .stats import *  # noqa: F401,F403
from .tasks import *  # noqa: F401,F403
from .timing import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403

__version__ = "0.1.0"

_AUDIT_NAMES = (
    "audit",  # the subpackage (``lu.audit.main`` is the command line)
    "audit_model",
    "assert_audit",
    "assert_batch_independent",
    "AuditReport",
    "CheckResult",
    "PaddingSpec",
    "norm_inventory",
)

# The public names: what ``from lnbn_utils import *`` and ``dir(lu)`` show. Each
# module keeps its own ``__all__``; this is their union, plus the auditor's names,
# which are imported on first use (``__getattr__`` below).
__all__ = [
    "GRAD_BLOWUP",
    "Interval",
    "as_text",
    "bn_layers",
    "bootstrap_interval",
    "ci_text",
    "clopper_pearson_interval",
    "finding_defaults",
    "line_batch",
    "padded_lm_loss",
    "paired_bootstrap_interval",
    "recalibrate_bn",
    "token_budget_batches",
    "activation_bytes",
    "ACTIVATION_CATEGORIES",
    "all_reduce_counted",
    "apply_rotary",
    "attention_mask",
    "base_seed",
    "batch_stats_of",
    "batch_token_counts",
    "BATCHNORM_CLASSES",
    "BatchRenorm",
    "BatchStatsNorm",
    "Block",
    "bn_scale_shift",
    "bootstrap_ci",
    "bucketed_batches",
    "build_char_lm",
    "cache_sizes",
    "CharCorpus",
    "CharLMRun",
    "classifier_loss",
    "CollectiveCounter",
    "convert_sync_batchnorm",
    "document_positions",
    "DP_NORMS",
    "DyT",
    "evaluate",
    "evaluating",
    "Finding",
    "finding",
    "fmt_ci",
    "fold_batchnorm_model",
    "fold_bn_linear",
    "fold_layernorm_model",
    "fold_linear_bn",
    "fold_ln_affine",
    "free_port",
    "get_device",
    "GhostBatchNorm",
    "glue",
    "group_scale",
    "History",
    "iid_tid",
    "influence_summary",
    "interleaved_times",
    "is_foldable_batchnorm",
    "keep_freed_memory",
    "LayerNorm",
    "lengths_to_padding_mask",
    "lm_loss",
    "load_text",
    "MajorityTask",
    "make_norm",
    "MaskedBatchNorm",
    "median_time",
    "min_traffic",
    "NoNorm",
    "NORM_COLORS",
    "NORM_KINDS",
    "pack_sequences",
    "pad_sequences",
    "paired_bootstrap_ci",
    "PositionBatchNorm",
    "PowerNorm",
    "powernorm_fluctuation",
    "predict_batched",
    "random_batches",
    "recorded_findings",
    "register_norm",
    "RegularizedBatchNorm",
    "RMSNorm",
    "run_data_parallel",
    "sample_token_batches",
    "saved_bytes_formula",
    "SAVED_CATEGORIES",
    "saved_tensor_breakdown",
    "saved_tensor_bytes",
    "seed_everything",
    "set_style",
    "single_batches",
    "stability_run",
    "stability_sweep",
    "StabilityResult",
    "StabilitySetup",
    "stat_distance",
    "stat_penalty",
    "strict_timing",
    "sync_batch_stats",
    "SyncTokenBatchNorm",
    "t_interval",
    "tid",
    "tid_null",
    "TIDRecorder",
    "time_ratio",
    "time_ratios",
    "TinyTransformer",
    "token_jacobian_norms",
    "token_jacobian_rows",
    "token_losses",
    "TokenBatchNorm",
    "train",
    "train_char_lm",
    "TransformerConfig",
    "unigram_token_losses",
    "VariableLengthTask",
    "written_bytes",
    *_AUDIT_NAMES,
]


def __getattr__(name: str):
    """Import the auditor on first use (``lu.audit_model``, ``lu.assert_audit``)."""
    if name in _AUDIT_NAMES:
        import importlib

        mod = importlib.import_module(".audit", __name__)
        return mod if name == "audit" else getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's attributes, the lazily imported auditor's names included."""
    return sorted(set(globals()) | set(_AUDIT_NAMES))
