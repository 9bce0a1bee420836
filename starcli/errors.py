"""Errors a user can act on. The CLI prints them as one line; anything else is a bug."""


class StarlightError(Exception):
    """Something the user asked for cannot be done; the message says what to do instead (exit 1)."""

    exit_code = 1


class UsageError(StarlightError):
    """The command line itself is malformed: a bad selector, option or value (exit 2)."""

    exit_code = 2
