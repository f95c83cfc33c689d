"""The family of vasrch's own errors: what a user can fix, as opposed to a bug.

`vasrch` prints a VasrchError as one line and exits 2; any other exception is a bug. Each member
also derives from the built-in exception such code raised before the family existed, so
`except ValueError` and `except RuntimeError` keep catching what they caught.
"""

from __future__ import annotations


class VasrchError(Exception):
    """Something vasrch was given or found that it cannot work with; the message says what."""


class ConfigError(VasrchError, ValueError):
    """A config (file, field, environment setting) that cannot be used; the message names the
    file, the field and the value."""


class DataError(VasrchError, ValueError):
    """Input data that cannot be used: a catalog, manifest, query image or weights file."""


class RunIntegrityError(VasrchError, RuntimeError):
    """A run or other saved artifact that is missing, incomplete, damaged or tampered with."""


class BusyError(VasrchError, RuntimeError):
    """A workspace another writer holds (its lock) for longer than the caller would wait."""


class UsageError(VasrchError, ValueError):
    """A command line, call or request that cannot be run as given."""
