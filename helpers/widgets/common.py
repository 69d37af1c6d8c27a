"""What every widget shares: a matplotlib figure as PNG bytes, and stable CSS classes for the browser tests.

Presentation layer (ipywidgets), like the whole of :mod:`helpers.widgets`.
"""
from __future__ import annotations

import io

from matplotlib.figure import Figure


def figure_png(fig: Figure) -> bytes:
    """Render a matplotlib figure to PNG bytes (every widget, notebooks 01-04)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def css_hooks(prefix: str, **parts) -> None:
    """Give widgets stable CSS classes, ``hp-<prefix>-<part>``, that the browser test (tests/browser) finds
    (every widget, notebooks 01-04)."""
    for part, widget in parts.items():
        widget.add_class(f"hp-{prefix}-{part.replace('_', '-')}")


__all__ = ["figure_png", "css_hooks"]
