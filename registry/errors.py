"""The registry's own errors, so that `registry/` stands alone; the CLI prints them as one line (exit 1)."""


class RegistryError(Exception):
    """The registry or its store cannot do what was asked; the message says what to do instead."""

    exit_code = 1


class CorruptBlobError(RegistryError):
    """A checkpoint blob is missing or its bytes no longer match the recorded sha256."""


class RegistryUsageError(RegistryError):
    """The registry named is the wrong thing (a file as home, an in-memory database URL): a usage error (exit 2)."""

    exit_code = 2
