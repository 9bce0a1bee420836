"""The checkpoint store in an object store (S3, GCS, Azure, … through fsspec), with a local read-through cache.

Same layout as the local store (`<prefix>/sha256/<2 hex>/<62 hex>.safetensors`) and the same promises:
`put_bytes` returns only once the blob is in the store and reads back with the right sha256, so the row
inserted next never points at a missing or partial object; every load is verified, the cached copy too.
An object PUT is atomic (readers see the old object or the new one, never half), so no temporary name is
needed as on a file system. Every failure of the store is a one-line RegistryError naming the URL.

S3 credentials and endpoint come from the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, AWS_PROFILE, …); STARLIGHT_S3_ENDPOINT_URL overrides the endpoint for starlight alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import CorruptBlobError, RegistryError
from .paths import S3_ENDPOINT_ENV, STORE_URL_ENV, masked_url, url_credentials
from .store import URL_HELP, BlobStore, CheckpointStore, blob_key, corrupt

# A dead or firewalled endpoint should fail in seconds, not after botocore's default 60 s per attempt;
# one that accepts connections and then stops answering, within a minute (was: ~8 minutes, s3fs's 5
# retries of botocore's 60 s reads): at most S3_ATTEMPTS × S3_READ_TIMEOUT_S of waiting per call.
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 15
S3_ATTEMPTS = 2  # tries of a timed-out call, by s3fs; botocore itself tries each once
# AWS's bucket naming rules (3-63 characters: lower-case letters, digits, dots and hyphens).
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
S3_PROTOCOLS = ("s3", "s3a")
# Stores whose URL starts with a bucket (or container), which must exist before anything is written.
BUCKET_PROTOCOLS = (*S3_PROTOCOLS, "gs", "gcs", "az", "abfs", "abfss")
CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "s3a": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`)",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`)",
}
PACKAGES = {
    "s3": "s3fs (pip install 'starlight-landscapes[s3]')", "s3a": "s3fs (pip install 'starlight-landscapes[s3]')",
    "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs",
}
# Web servers are read-only to fsspec: a store there could never be written.
READ_ONLY = ("http", "https")
# fsspec file systems that cannot keep a registry's blobs: read-only views (data: URLs, archives, git
# trees, reference sets) and memory://, which lives in one process (the next command would not find it).
NOT_A_STORE = {
    "memory": "keeps files in this process only, so the next command could not load them",
    "data": "is read-only (the bytes are in the URL)",
    **{p: "is a read-only view" for p in ("zip", "tar", "libarchive", "github", "git", "gist", "dvc", "reference")},
    # starlight keeps its own verified read-through cache under the home.
    **{p: "is a cache in front of another store; name that store itself (starlight caches its blobs in the home)"
       for p in ("simplecache", "filecache", "blockcache", "cached")},
}
MISSING_BUCKET = re.compile(r"bucket\b.*\b(does not exist|not found)", re.IGNORECASE)


class ObjectStore(BlobStore):
    def __init__(self, url: str, cache: CheckpointStore):
        parts = urlsplit(url)
        self.protocol = parts.scheme
        self.given = masked_url(url)  # as the user wrote it (less any credentials), for messages about the URL
        self.url = url.rstrip("/")
        self.cache = cache
        self._check_url(parts)
        self.fs = self._filesystem()
        self.root = self.fs._strip_protocol(self.url).rstrip("/")

    # -- the interface -------------------------------------------------------------------------------

    def path(self, sha256: str) -> str:
        return f"{self.describe()}/{blob_key(sha256)}"

    def describe(self) -> str:
        return masked_url(self.url).rstrip("/")  # never print credentials written into the URL

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        there = self._fetch(sha)
        # An object already there is kept only when its bytes are right; otherwise writing it again repairs it.
        intact = there is not None and hashlib.sha256(there).hexdigest() == sha
        del there  # a checkpoint can be large: hold at most two copies at once
        if not intact:
            self._call("write to", self.fs.pipe_file, self._key(sha), data)
            back = self._fetch(sha)
            if back is None or hashlib.sha256(back).hexdigest() != sha:
                raise RegistryError(
                    f"checkpoint {self.path(sha)} did not read back as written; the store is not keeping what it "
                    "is given (check its health and quota), then register again"
                )
        self._keep(data)
        return sha

    def read_verified(self, sha256: str) -> bytes:
        if self.cache.holds(sha256):
            try:
                return self.cache.read_verified(sha256)
            except CorruptBlobError:
                pass  # a damaged cached copy: fetch the blob again, and _keep overwrites the copy
        data = self._fetch(sha256)
        if data is None:
            raise CorruptBlobError(
                f"checkpoint {self.path(sha256)} is missing; it was deleted from the store, or {STORE_URL_ENV} "
                "names another store than the one it was registered in"
            )
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise corrupt(self.path(sha256), actual, sha256)
        self._keep(data)
        return data

    def collect_temp(self) -> list:
        return self.cache.collect_temp()  # object PUTs are atomic: only the local cache has temp files

    def holds(self, sha256: str) -> bool:
        return bool(self._call("read from", self.fs.exists, self._key(sha256)))

    def modified(self, sha256: str) -> float | None:
        try:
            info = self._call("read from", self.fs.info, self._key(sha256))
        except RegistryError:
            return None
        when = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
        if hasattr(when, "timestamp"):
            return when.timestamp()
        return float(when) if isinstance(when, (int, float)) else None

    def delete(self, sha256: str) -> bool:
        self.cache.delete(sha256)
        if not self.holds(sha256):
            return False
        self._call("delete from", self.fs.rm_file, self._key(sha256))
        return True

    def shas(self) -> list[str]:
        base = f"{self.root}/sha256"
        found = self._call("list", self.fs.find, base)
        out = []
        for key in found:
            prefix, _, name = key[len(base) + 1 :].partition("/")
            sha = prefix + name.removesuffix(".safetensors")
            if len(prefix) == 2 and name.endswith(".safetensors") and re.fullmatch(r"[0-9a-f]{64}", sha):
                out.append(sha)
        return sorted(out)

    # -- the object store ----------------------------------------------------------------------------

    def check_reachable(self) -> None:
        """One request to the bucket before any work (BlobStore.check_reachable): a missing bucket or
        an unreachable endpoint is found before a run trains for hours, not when its checkpoint is written."""
        if self.protocol not in BUCKET_PROTOCOLS:
            return
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.info(bucket)
        except FileNotFoundError:
            # A server that is not an object store at all (a wrong port, a web server) also answers 404.
            endpoint = _endpoint()
            other = f", or {masked_url(endpoint)} is not an S3 server" if endpoint and self.protocol in S3_PROTOCOLS else ""
            raise RegistryError(
                f"the bucket of {self.describe()} does not exist{other}; create it or fix {STORE_URL_ENV}"
            ) from None
        except PermissionError:
            # Asking about the bucket needs a right (s3:ListBucket) that a key limited to its prefix lacks;
            # wrong credentials look the same. The first put or load tells which, in its own line.
            return
        except Exception as e:
            # No credentials at all fails on this side before any request: every write would fail the same.
            if _missing_bucket(e) or _unreachable(e) or _no_credentials(e):
                raise self._failure(e, "reach") from e
            return  # anything else is for the first put or load to report

    def _key(self, sha256: str) -> str:
        return f"{self.root}/{blob_key(sha256)}"

    def _fetch(self, sha256: str) -> bytes | None:
        """The object's bytes, None when there is no such object (a missing bucket is an error)."""
        try:
            return self.fs.cat_file(self._key(sha256))
        except FileNotFoundError as e:
            if _missing_bucket(e):
                raise self._failure(e, "read from") from e
            return None
        except Exception as e:  # whatever the backend raises becomes one clear line
            raise self._failure(e, "read from") from e

    def _call(self, action: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            raise self._failure(e, action) from e

    def _keep(self, data: bytes) -> None:
        try:
            self.cache.put_bytes(data)
        except OSError:
            pass  # the cache only saves a download; a full or read-only home must not fail a load

    def _check_url(self, parts) -> None:
        bucket = parts.netloc.rpartition("@")[2]
        if self.protocol in READ_ONLY:
            raise RegistryError(f"{STORE_URL_ENV}={self.given!r} is a web address, which cannot be written; {URL_HELP}")
        if self.protocol in NOT_A_STORE:
            raise RegistryError(
                f"{STORE_URL_ENV}={self.given!r}: fsspec's {self.protocol} {NOT_A_STORE[self.protocol]}; {URL_HELP}"
            )
        if not bucket:
            raise RegistryError(f"{STORE_URL_ENV}={self.given!r} names no bucket; {URL_HELP}")
        if self.protocol in S3_PROTOCOLS and not S3_BUCKET.match(bucket):
            raise RegistryError(
                f"{STORE_URL_ENV}={self.given!r}: {bucket!r} is not a valid S3 bucket name "
                "(3-63 lower-case letters, digits, '.' and '-'); fix the URL"
            )
        endpoint = os.environ.get(S3_ENDPOINT_ENV)
        if self.protocol in S3_PROTOCOLS and endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            raise RegistryError(f"{S3_ENDPOINT_ENV}={masked_url(endpoint)!r} is not an http:// or https:// URL; fix or unset it")

    def _filesystem(self):
        import fsspec

        try:
            cls = fsspec.get_filesystem_class(self.protocol)
        except ValueError:
            raise RegistryError(
                f"{STORE_URL_ENV}={self.given!r}: unknown protocol {self.protocol!r}; {URL_HELP}"
            ) from None
        except ImportError:
            package = PACKAGES.get(self.protocol, f"the fsspec package for {self.protocol}://")
            raise RegistryError(f"{STORE_URL_ENV}={self.given!r} needs {package}; install it") from None
        if self.protocol not in BUCKET_PROTOCOLS:
            # Others (ftp, sftp, hdfs, ...) raise what their backend raises, not what the store's messages
            # read (a traceback came from ftp): only the object stores starlight is built and tested for.
            raise RegistryError(
                f"{STORE_URL_ENV}={self.given!r}: {self.protocol}:// is not a store starlight supports "
                f"(s3, gs, az/abfs, or a file:// folder); {URL_HELP}"
            )
        # A fresh instance per store: fsspec would otherwise hand back one made with older credentials.
        options: dict = {"skip_instance_cache": True}
        if self.protocol in S3_PROTOCOLS:
            options["config_kwargs"] = {
                "connect_timeout": S3_CONNECT_TIMEOUT_S, "read_timeout": S3_READ_TIMEOUT_S,
                "retries": {"total_max_attempts": 1, "mode": "standard"},  # s3fs retries (below)
            }
            if os.environ.get(S3_ENDPOINT_ENV):
                options["endpoint_url"] = os.environ[S3_ENDPOINT_ENV]
        try:
            fs = cls(**options)
        except Exception as e:
            raise self._failure(e, "open") from e
        if self.protocol in S3_PROTOCOLS:
            fs.retries = S3_ATTEMPTS  # s3fs's own retries of a timed-out call (a class attribute, 5 by default)
        return fs

    def _failure(self, exc: BaseException, action: str) -> RegistryError:
        where, why = self.describe(), _one_line(exc)
        if _missing_bucket(exc):
            return RegistryError(f"the bucket of {where} does not exist ({why}); create it or fix {STORE_URL_ENV}")
        credentials = CREDENTIALS.get(self.protocol, "the store's credentials")
        if _no_credentials(exc):
            return RegistryError(f"no credentials for {where} were found ({why}); set {credentials}")
        if isinstance(exc, PermissionError) or type(exc).__name__ == "PartialCredentialsError":
            return RegistryError(f"{where} refused access ({why}); check {credentials} and the bucket's permissions")
        if _unreachable(exc):
            if self.protocol not in S3_PROTOCOLS:
                return RegistryError(f"cannot reach the store {where} ({why}); check the network")
            endpoint = masked_url(_endpoint() or "AWS")
            return RegistryError(
                f"cannot reach the store {where} at {endpoint} ({why}); check {S3_ENDPOINT_ENV} or AWS_ENDPOINT_URL "
                "and the network"
            )
        return RegistryError(f"could not {action} the store {where}: {type(exc).__name__}: {why}")


def _endpoint() -> str | None:
    """The S3 endpoint messages name: starlight's own variable, else botocore's."""
    return os.environ.get(S3_ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL")


def _no_credentials(exc: BaseException) -> bool:
    return any(type(e).__name__ == "NoCredentialsError" for e in _chain(exc))


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _error_code(exc: BaseException) -> str | None:
    for e in _chain(exc):
        code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code")
        if code:
            return code
    return None


def _missing_bucket(exc: BaseException) -> bool:
    if _error_code(exc) in ("NoSuchBucket", "BucketNotFound"):
        return True
    # Backends without error codes: their message says so ("The specified bucket does not exist").
    return isinstance(exc, FileNotFoundError) and bool(MISSING_BUCKET.search(str(exc)))


def _unreachable(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if any("Connect" in c.__name__ or "Timeout" in c.__name__ for c in type(e).__mro__):
            return True  # botocore's EndpointConnectionError / ConnectTimeoutError, aiohttp's connector errors
    return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "…"


def open_store(url: str, cache_dir: Path) -> BlobStore:
    """The store at `url` (STARLIGHT_STORE_URL); a remote one keeps verified copies in `cache_dir`.

    Only the URL is checked here (no network); a registry opened for writing then asks the bucket once
    (`check_reachable`), and wrong credentials for objects are reported by the first put or load.
    """
    parts = urlsplit(url)
    shown = masked_url(url)  # every message below: the secret of a URL that carries one is never printed
    if "://" not in url or not parts.scheme:
        raise RegistryError(f"{STORE_URL_ENV}={shown!r} is not a URL; {URL_HELP}")
    if url_credentials(url) and parts.scheme in BUCKET_PROTOCOLS:
        # s3fs would take "key:secret@bucket" for the bucket's name (and print it in every error); these
        # stores read credentials from the environment only. (An sftp user@host is the file system's own.)
        credentials = CREDENTIALS.get(parts.scheme, "the store's own credential variables")
        raise RegistryError(f"{STORE_URL_ENV}={shown!r} carries credentials; remove them from the URL and set {credentials}")
    if parts.query or parts.fragment:
        raise RegistryError(f"{STORE_URL_ENV}={shown!r} has a '?' or '#' part, which a store URL cannot have; {URL_HELP}")
    if parts.scheme in ("file", "local"):
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise RegistryError(f"{STORE_URL_ENV}={shown!r} is not an absolute file URL; write file:///ABSOLUTE/PATH")
        return CheckpointStore(Path(unquote(parts.path)))
    return ObjectStore(url, CheckpointStore(cache_dir))
