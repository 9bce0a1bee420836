"""Content-addressed checkpoint store: blobs/sha256/<2 hex>/<62 hex>.safetensors.

Files are written to a temporary name and renamed into place, so a reader never sees half a file, and
identical checkpoints share one blob. The hash is checked on every load: a flipped bit is an error, not
a silently different network. Only safetensors go in: no pickles, nothing executable.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CorruptBlobError

if TYPE_CHECKING:
    import torch


class CheckpointStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / f"{sha256[2:]}.safetensors"

    def put(self, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> str:
        from safetensors.torch import save

        # Contiguous CPU copies: safetensors refuses views and shared storage.
        data = save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, metadata=metadata)
        return self.put_bytes(data)

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if final.exists():
            return sha
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".safetensors")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def read_verified(self, sha256: str) -> bytes:
        path = self.path(sha256)
        if not path.exists():
            raise CorruptBlobError(f"checkpoint {path} is missing; the store was moved or pruned by hand")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CorruptBlobError(
                f"checkpoint {path} is corrupted (sha256 {actual[:12]}… != recorded {sha256[:12]}…); "
                "retrain or re-register that solution"
            )
        return data

    def load(self, sha256: str, device: str = "cpu") -> dict[str, "torch.Tensor"]:
        from safetensors.torch import load

        tensors = load(self.read_verified(sha256))
        return {k: v.to(device) for k, v in tensors.items()} if device != "cpu" else tensors
