"""Small synthetic volumes for tests that need no phantom: the ones :mod:`uadbench.testing` checks plugins on."""

from __future__ import annotations

from uadbench.testing import brainlike_volumes

__all__ = ["brainlike_volumes"]
