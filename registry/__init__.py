"""The solution registry: SQL tables, migrations and the content-addressed checkpoint store.

Nothing here imports torch at module level, so listing the registry stays instant.
"""

from .database import Registry, open_registry
from .errors import CorruptBlobError, RegistryError
from .objects import open_store
from .store import BlobStore, CheckpointStore
from .tables import BarrierResult, LandscapeResult, Solution

__all__ = [
    "Registry", "open_registry", "BlobStore", "CheckpointStore", "open_store", "CorruptBlobError", "RegistryError", "Solution", "BarrierResult", "LandscapeResult",
]
