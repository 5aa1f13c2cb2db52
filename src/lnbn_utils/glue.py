"""Hand measured numbers to the book's prose (myst-nb ``glue``); a no-op on Colab."""

from __future__ import annotations

from typing import Any

__all__ = ["glue"]


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`name:.2f``` in the book.

    Returns ``None``, so a cell that ends in a glue call prints nothing. Outside a
    book build (Colab, a plain Jupyter kernel without myst-nb) it does nothing, so
    notebooks run anywhere.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"expected a glue name that is a Python identifier, got {name!r}"
        )
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return None
    _glue(name, value, display=display)
