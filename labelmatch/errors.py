"""The configuration error every layer raises and every entry point reports as one line
(`labelmatch.cli`), like bad data (`labelmatch.data.errors.DataError`)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot train as meant: the message names the key and what to give."""
