"""CLI commands, one module per concern. Each module only parses options, calls the engine and prints.

Modules here must not import torch at import time: `starlight --help`, `list` and `show` stay instant.
"""
