"""The solution registry: SQL tables, migrations and the content-addressed checkpoint store.

Nothing here imports torch at module level, so listing the registry stays instant.
"""

from .database import Registry, open_registry
from .store import CheckpointStore, CorruptBlobError
from .tables import BarrierResult, Solution

__all__ = ["Registry", "open_registry", "CheckpointStore", "CorruptBlobError", "Solution", "BarrierResult"]
