"""User-facing errors.

Everything a user can get wrong (a bad config key, a missing data folder, an
unknown study) raises a subclass of :class:`NasError`. The command line turns
these into one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message folded onto one line (at most ``limit``
    characters), or its type's name when it has none."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


class NasError(Exception):
    """An error caused by the user's input; its message is one line that says
    what is wrong and what is allowed."""


class ConfigError(NasError, ValueError):
    """An architecture config or search space is invalid."""


class DataError(NasError):
    """A dataset cannot be found, downloaded or decoded."""
