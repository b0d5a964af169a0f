"""outreach: newsletters to researchers from their own familiar liaison, with reply tracking.

The library is usable without the CLI; see ``__all__`` for the public API.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
