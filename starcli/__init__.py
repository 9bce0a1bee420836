"""starlight: star domains of neural-network solutions.

Importing this package stays cheap (no torch); the engine modules import torch themselves.
"""

__version__ = "0.1.0"
