"""Content-addressed checkpoint store: blobs/sha256/<2 hex>/<62 hex>.safetensors.

Files are written to a temporary name and renamed into place, so a reader never sees half a file, and
identical checkpoints share one blob. The hash is checked on every load: a flipped bit is an error, not
a silently different network. Only safetensors go in: no pickles, nothing executable.

The same layout can live in an object store instead (STARLIGHT_STORE_URL=s3://bucket/prefix, see
objects.py); `open_store` picks the kind from the URL, and both kinds offer the interface of BlobStore.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CorruptBlobError

if TYPE_CHECKING:
    import torch


_SHA256 = re.compile(r"[0-9a-f]{64}")
TEMP_PREFIX = ".tmp-"


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (the folder's entry, not only the file's bytes, survives power loss)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened (some platforms): the rename itself is done
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def blob_key(sha256: str) -> str:
    """Where a blob lives below the store's root, on every kind of store."""
    return f"sha256/{sha256[:2]}/{sha256[2:]}.safetensors"


def corrupt(where: str, actual: str, sha256: str) -> CorruptBlobError:
    return CorruptBlobError(
        f"checkpoint {where} is corrupted (sha256 {actual[:12]}… != recorded {sha256[:12]}…); "
        "retrain or re-register that solution"
    )


class BlobStore:
    """What the registry needs of a store: bytes in under their sha256, verified bytes out."""

    def path(self, sha256: str) -> Path | str:
        """Where the blob is (a Path, or a URL for an object store), for messages and `show`."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def put_bytes(self, data: bytes) -> str:
        """Store `data` completely (verifying or repairing a copy already there); returns its sha256."""
        raise NotImplementedError

    def read_verified(self, sha256: str) -> bytes:
        """The blob's bytes; CorruptBlobError when it is missing or they do not hash to `sha256`."""
        raise NotImplementedError

    def holds(self, sha256: str) -> bool:
        """Whether the blob is there at all (its bytes are checked when it is read)."""
        raise NotImplementedError

    def delete(self, sha256: str) -> bool:
        """Remove the blob; False when it was not there. Callers make sure no row references it."""
        raise NotImplementedError

    def shas(self) -> list[str]:
        """The sha256 of every blob in the store (for garbage collection)."""
        raise NotImplementedError

    def modified(self, sha256: str) -> float | None:
        """When the blob was last put (seconds since the epoch), None when the store cannot say."""
        return None

    def collect_temp(self) -> list:
        """Remove temp files that writers killed mid-write left behind (a store without them: nothing)."""
        return []

    def check_reachable(self) -> None:
        """Raise a one-line RegistryError now if blobs could not be written at all (a remote store whose
        bucket is missing, or that cannot be reached), rather than after the work that produced them.
        A local store is a folder the registry made: nothing to check."""

    def put(self, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> str:
        from safetensors.torch import save

        # Contiguous CPU copies: safetensors refuses views and shared storage.
        data = save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, metadata=metadata)
        return self.put_bytes(data)

    def load(self, sha256: str, device: str = "cpu") -> dict[str, "torch.Tensor"]:
        from safetensors.torch import load

        tensors = load(self.read_verified(sha256))
        return {k: v.to(device) for k, v in tensors.items()} if device != "cpu" else tensors


class CheckpointStore(BlobStore):
    """The store in a local (or network-mounted) folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def describe(self) -> str:
        return str(self.root)

    def holds(self, sha256: str) -> bool:
        """Whether a file is there at all (its bytes are checked when it is read)."""
        return self.path(sha256).exists()

    def modified(self, sha256: str) -> float | None:
        try:
            return self.path(sha256).stat().st_mtime
        except FileNotFoundError:
            return None

    def delete(self, sha256: str) -> bool:
        # The prefix folder stays (at most 256 of them): removing it could pull it from under a writer
        # that has just made it for a blob of its own.
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def shas(self) -> list[str]:
        base = self.root / "sha256"
        found = (p.parent.name + p.stem for p in base.glob("??/*.safetensors")) if base.is_dir() else ()
        return sorted(sha for sha in found if _SHA256.fullmatch(sha))  # never a writer's .tmp- file

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        # A blob already there is only kept when its bytes are right: a truncated or bit-flipped file
        # (a crash of an old version, a bad disk) is replaced, so registering again repairs it.
        try:
            if hashlib.sha256(final.read_bytes()).hexdigest() == sha:
                return sha
        except FileNotFoundError:
            pass  # not there, or a collector deleted it just now: write it

        for attempt in (1, 2):
            try:
                self._write(final, data)
                return sha
            except FileNotFoundError:
                # A collector on open took our temp file for a dead writer's in the instant between its
                # creation and our lock on it: write it again (it cannot happen twice, we lock at once now).
                if attempt == 2:
                    raise
        return sha

    def _write(self, final: Path, data: bytes) -> None:
        """Temp file (locked while it is written, so `collect_temp` knows it is live), fsync, rename into
        place, fsync the folder: a crash at any point leaves the old state or the whole blob, and a temp
        file never outlives a failure (a killed writer's is collected when the registry is next opened)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=TEMP_PREFIX, suffix=".safetensors")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # mkstemp makes 0600; a blob follows the umask like every other file, so a group-shared home can load it.
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                os.replace(tmp, final)  # still locked: the name is gone before the lock is
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_folder(final.parent)

    def collect_temp(self) -> list[Path]:
        """Remove the temp files of writers that died (killed mid-write: no `except` ran to remove them).

        A live writer holds a lock on its temp file until the rename; a file nobody locks is a dead
        writer's. Called when a writer opens the registry; returns what it removed."""
        base = self.root / "sha256"
        removed = []
        for tmp in base.glob(f"??/{TEMP_PREFIX}*") if base.is_dir() else ():
            try:
                fd = os.open(tmp, os.O_RDONLY)
            except OSError:
                continue  # renamed into place meanwhile, or not ours to read
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer's
            finally:
                os.close(fd)  # closing drops the lock we may have taken
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
        return removed

    def read_verified(self, sha256: str) -> bytes:
        path = self.path(sha256)
        if not path.exists():
            raise CorruptBlobError(f"checkpoint {path} is missing; the store was moved or pruned by hand")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise corrupt(str(path), actual, sha256)
        return data


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


URL_HELP = "write s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or file:///ABSOLUTE/PATH, or unset it to keep them in the home"


