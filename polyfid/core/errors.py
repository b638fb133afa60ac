"""The one error base class of polyfid: everything a user can cause derives from it, and the CLI turns it into one
line on stderr and exit status 2 (never a traceback). Messages name the file, record or key at fault."""

from __future__ import annotations


class PolyfidError(Exception):
    """A user-facing error (bad input, bad config, missing file); the message is the whole report."""


class ConfigError(PolyfidError, ValueError):
    """A config that cannot be used (the message names the file and the offending key)."""
