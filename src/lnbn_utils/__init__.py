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
from .repaired_norms import *  # noqa: F401,F403
from .repro import *  # noqa: F401,F403
from .stats import *  # noqa: F401,F403
from .tasks import *  # noqa: F401,F403
from .timing import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403

__version__ = "0.1.0"

_AUDIT_NAMES = ("audit", "AuditReport", "CheckResult", "PaddingSpec", "norm_inventory")


def __getattr__(name: str):
    """Import the auditor on first use (so ``python -m lnbn_utils.audit`` runs cleanly).

    ``lu.audit`` is the module, and calling it runs ``lu.audit.audit``.
    """
    if name in _AUDIT_NAMES:
        import importlib

        mod = importlib.import_module(".audit", __name__)
        return mod if name == "audit" else getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
