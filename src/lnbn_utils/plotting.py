"""One plotting style for the whole book, readable on the light and the dark theme."""

from __future__ import annotations

import matplotlib as mpl

__all__ = ["set_style", "NORM_COLORS"]

#: One colour per norm kind, the same in every chapter (colour-blind safe, Okabe-Ito).
NORM_COLORS = {
    "layer": "#0072B2",
    "batch": "#D55E00",
    "masked_batch": "#E69F00",
    "rms": "#009E73",
    "none": "#777777",
    "dyt": "#CC79A7",
    "power": "#56B4E9",
    "power_simple": "#56B4E9",
    "rbn": "#8C564B",
    "renorm": "#000000",
}


def set_style() -> None:
    """Matplotlib defaults: opaque white figures (for dark pages), grid, sizes."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 120,
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
            "axes.facecolor": "white",
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.frameon": False,
            "figure.constrained_layout.use": True,
        }
    )
