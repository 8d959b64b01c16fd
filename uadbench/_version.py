"""The harness version (no imports, so every module can read it cheaply)."""

__version__ = "0.1.0"
