"""starlight: star domains of neural-network solutions.

Importing this package stays cheap (no torch); the engine modules import torch themselves.
"""


def __getattr__(name: str) -> str:
    # `__version__` is read from the installed distribution's metadata (one source: pyproject.toml), and
    # only when asked: scanning the installed distributions would cost every `--help` tens of milliseconds.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("starlight-landscapes")
    except PackageNotFoundError:  # a source tree on PYTHONPATH that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
