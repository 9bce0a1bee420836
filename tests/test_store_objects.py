"""The checkpoint store in S3 (STARLIGHT_STORE_URL=s3://…) against a real S3-compatible server on loopback.

The server is moto's (`python -m moto.server`): `.ci/run` starts one and sets STARLIGHT_TEST_S3_ENDPOINT;
otherwise these tests start their own. Without moto they are skipped, except under CI=true, where that
is a failure. Every test gets its own bucket; objects are corrupted and deleted behind the store's back
with boto3, as a bad disk or a careless `aws s3 rm` would.

The local store's repair of a damaged blob is tested here too, since it is the same promise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from starcli.registry import CorruptBlobError, Registry, RegistryError, open_registry
from starcli.registry.objects import open_store
from starcli.registry.paths import blob_cache

PREFIX = "ckpt"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# -- the S3 server --------------------------------------------------------------------------------------


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    why = f"{', '.join(missing)} not installed: pip install s3fs 'moto[server]' (make install does)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI must run the object-store tests")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto(log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    _require("moto", "flask", "boto3")
    port = _free_port()
    with open(log, "wb") as out:  # moto logs every request: a file, not a pipe that could fill and block it
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"moto server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2).read()
            return proc, endpoint
        except OSError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail(f"moto server did not answer on {endpoint} within 90 s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    _require("s3fs", "boto3")
    given = os.environ.get("STARLIGHT_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    proc, endpoint = _start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield endpoint
    _stop(proc)


def _client(endpoint: str, **credentials: str):
    import boto3

    creds = {**CREDENTIALS, **credentials}
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=creds["AWS_DEFAULT_REGION"],
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
    )


def _s3_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, url: str, **credentials: str) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    # No ~/.aws of whoever runs the tests: only the variables below count.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in {**CREDENTIALS, **credentials}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STARLIGHT_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("STARLIGHT_STORE_URL", url)


@pytest.fixture
def s3(s3_endpoint, home, monkeypatch):
    """A fresh bucket, with STARLIGHT_STORE_URL=s3://<bucket>/ckpt and the credentials set."""
    bucket = f"starlight-{uuid.uuid4().hex[:16]}"
    client = _client(s3_endpoint)
    client.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/{PREFIX}"
    _s3_env(monkeypatch, s3_endpoint, url)
    yield SimpleNamespace(bucket=bucket, client=client, url=url, endpoint=s3_endpoint)
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


def _key(sha: str) -> str:
    return f"{PREFIX}/sha256/{sha[:2]}/{sha[2:]}.safetensors"


def _object(s3, sha: str) -> bytes:
    return s3.client.get_object(Bucket=s3.bucket, Key=_key(sha))["Body"].read()


def _keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", []))


def _weights(a: float, b: float = 0.0):
    import torch

    return {"w": torch.arange(6.0).reshape(2, 3) * a + b, "b": torch.full((3,), b)}


def _fields(key="k1", **kw):
    base = dict(
        key=key, kind="anchor", arch="mlp", arch_kwargs={"width": 4}, width=4, seed=1, dataset="mnist1d",
        recipe="r", config={"a": 1}, epochs=1, metrics={"train_acc": 1.0}, device="cpu", wall_seconds=0.1, versions={},
    )
    base.update(kw)
    return base


def _same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# -- put and load through S3 ----------------------------------------------------------------------------


def test_put_writes_the_blob_to_the_bucket_and_load_reads_it_back(s3, home):
    from safetensors.torch import save

    reg = open_registry(home)
    tensors = _weights(2.0, 1.0)
    sha = reg.store.put(tensors)
    data = _object(s3, sha)
    assert hashlib.sha256(data).hexdigest() == sha  # the object's own bytes, hashed by hand
    assert data == save({k: v.contiguous() for k, v in tensors.items()})
    assert _keys(s3) == [_key(sha)]
    assert reg.store.path(sha) == f"{s3.url}/sha256/{sha[:2]}/{sha[2:]}.safetensors"
    assert _same(reg.store.load(sha), tensors)
    assert not (home / "blobs").exists()  # nothing went to the local store
    reg.close()


def test_a_solution_registered_with_the_s3_store_loads_back_on_another_node(s3, home, tmp_path, monkeypatch):
    from starcli.solutions import records

    monkeypatch.setenv("STARLIGHT_DB_URL", f"sqlite:///{tmp_path / 'shared.db'}")
    first = open_registry(home)
    sol, created = records.add(first, _weights(3.0), **_fields())
    assert created
    assert records.record(first, sol)["checkpoint"] == f"{s3.url}/{_key(sol.sha256)[len(PREFIX) + 1:]}"

    # Another home is another node: its own (empty) cache, the same database and bucket.
    other = open_registry(tmp_path / "node2")
    found = records.get(other, sol.id)
    assert _same(records.state_dict(other, found), _weights(3.0))
    assert (blob_cache(tmp_path / "node2") / _key(sol.sha256)[len(PREFIX) + 1:]).exists()
    first.close()
    other.close()


# -- integrity ------------------------------------------------------------------------------------------


def test_a_corrupted_object_is_an_error_naming_it_and_putting_it_again_repairs_it(s3, home, tmp_path):
    writer = open_registry(home)
    sha = writer.store.put(_weights(5.0))
    good = _object(s3, sha)
    flipped = bytearray(good)
    flipped[-1] ^= 0xFF
    s3.client.put_object(Bucket=s3.bucket, Key=_key(sha), Body=bytes(flipped))

    reader = Registry(tmp_path / "reader")  # an empty cache, so the load goes to S3
    with pytest.raises(CorruptBlobError) as excinfo:
        reader.store.load(sha)
    _one_line_error(excinfo, reader.store.path(sha), "corrupted")

    assert writer.store.put(_weights(5.0)) == sha
    assert _object(s3, sha) == good
    assert _same(reader.store.load(sha), _weights(5.0))

    s3.client.put_object(Bucket=s3.bucket, Key=_key(sha), Body=good[: len(good) // 2])  # truncated
    assert writer.store.put_bytes(good) == sha
    assert _object(s3, sha) == good
    writer.close()
    reader.close()


def test_a_deleted_object_is_a_missing_blob_error_naming_it(s3, home):
    reg = open_registry(home)
    sha = reg.store.put(_weights(1.0))
    s3.client.delete_object(Bucket=s3.bucket, Key=_key(sha))
    (reg.store.cache.path(sha)).unlink()
    with pytest.raises(CorruptBlobError) as excinfo:
        reg.store.read_verified(sha)
    _one_line_error(excinfo, reg.store.path(sha), "missing")
    reg.close()


def test_the_cache_serves_loads_without_s3_and_a_corrupt_cached_copy_is_fetched_again(s3, home, tmp_path):
    writer = open_registry(home)
    sha = writer.store.put(_weights(7.0, 2.0))
    good = _object(s3, sha)

    reader = Registry(tmp_path / "reader")
    cached = blob_cache(tmp_path / "reader") / "sha256" / sha[:2] / f"{sha[2:]}.safetensors"
    assert not cached.exists()
    assert _same(reader.store.load(sha), _weights(7.0, 2.0))
    assert cached.read_bytes() == good

    cached.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # a bad sector in the cache
    assert _same(reader.store.load(sha), _weights(7.0, 2.0))  # detected, fetched from S3 again
    assert cached.read_bytes() == good  # and the cached copy repaired

    s3.client.delete_object(Bucket=s3.bucket, Key=_key(sha))
    assert _same(reader.store.load(sha), _weights(7.0, 2.0))  # the object is gone: only the cache served it

    cached.write_bytes(good[:10])  # now neither copy is good
    with pytest.raises(CorruptBlobError) as excinfo:
        reader.store.load(sha)
    _one_line_error(excinfo, reader.store.path(sha), "missing")
    writer.close()
    reader.close()


# -- one-line errors ------------------------------------------------------------------------------------


def test_a_missing_bucket_is_a_one_line_error_naming_the_url(s3, home, monkeypatch):
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/ckpt"
    monkeypatch.setenv("STARLIGHT_STORE_URL", url)
    # A registry opened for writing asks the bucket first: nothing is created for a store it cannot use.
    with pytest.raises(RegistryError) as excinfo:
        open_registry(home)
    _one_line_error(excinfo, url, "does not exist", "STARLIGHT_STORE_URL")
    assert not home.exists()
    # The store's own puts and loads say the same (a bucket deleted while a registry is open).
    store = open_store(url, blob_cache(home))
    with pytest.raises(RegistryError) as excinfo:
        store.put(_weights(1.0))
    _one_line_error(excinfo, url, "does not exist", "STARLIGHT_STORE_URL")
    with pytest.raises(RegistryError) as excinfo:
        store.load("ab" * 32)
    assert type(excinfo.value) is RegistryError  # the bucket is missing, not the blob
    _one_line_error(excinfo, url, "does not exist")


def test_an_unreachable_endpoint_is_a_one_line_error(s3, home, monkeypatch):
    monkeypatch.setenv("STARLIGHT_S3_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    with pytest.raises(RegistryError) as excinfo:
        open_registry(home)
    _one_line_error(excinfo, s3.url, "cannot reach", "STARLIGHT_S3_ENDPOINT_URL")
    store = open_store(s3.url, blob_cache(home))
    with pytest.raises(RegistryError) as excinfo:
        store.put(_weights(1.0))
    _one_line_error(excinfo, s3.url, "cannot reach", "STARLIGHT_S3_ENDPOINT_URL")


def test_commands_that_only_read_rows_work_while_the_store_is_down(s3, home, cli, monkeypatch):
    from starcli.solutions import records

    reg = open_registry(home)
    history = [{"epoch": 1, "loss": 0.5}]
    sol, _ = records.add(reg, _weights(1.0), **_fields(history=history))
    reg.close()
    monkeypatch.setenv("STARLIGHT_S3_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # the store is gone
    code, out, err = cli("history", str(sol.id), "--json")
    assert code == 0, err
    assert [row["loss"] for row in json.loads(out)] == [0.5]
    code, out, err = cli("curves", "--star", str(sol.id), "--json")
    assert code == 0 and json.loads(out) == [], err  # no curves measured, and no store asked


def test_doctor_reports_an_unreachable_store_and_barriers_still_list_rows(s3, home, cli, monkeypatch):
    from starcli.solutions import records

    reg = open_registry(home)
    records.add(reg, _weights(1.0), **_fields("k-a"))
    records.add(reg, _weights(2.0), **_fields("k-b", seed=2))
    reg.close()
    monkeypatch.setenv("STARLIGHT_S3_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # the store is gone
    code, out, err = cli("doctor", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["store"].startswith("unreachable: cannot reach the store") and report["solutions"] == 2
    code, out, err = cli("doctor", "--fix")
    assert code == 0 and "store: unreachable" in out, err
    code, out, err = cli("barriers", "--json")  # read-only: rows, no store (was: "cannot reach the store")
    assert code == 0 and json.loads(out) == [], err


def test_an_endpoint_that_stops_answering_is_one_line_within_a_minute(home, monkeypatch):
    """It accepts connections and never answers: every wait is bounded by the read timeout and the
    retry budget (was: about 8 minutes)."""
    import threading

    from starcli.registry import objects

    _require("s3fs", "boto3")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    threading.Thread(target=lambda: held.extend(server.accept() for _ in range(16)), daemon=True).start()
    url = "s3://silent-bucket/ckpt"
    _s3_env(monkeypatch, f"http://127.0.0.1:{server.getsockname()[1]}", url)
    start = time.monotonic()
    try:
        with pytest.raises(RegistryError) as excinfo:
            open_registry(home)
    finally:
        server.close()
    _one_line_error(excinfo, url)
    assert time.monotonic() - start < objects.S3_ATTEMPTS * objects.S3_READ_TIMEOUT_S + 15
    assert not home.exists()


def test_bad_credentials_are_a_one_line_error(s3_endpoint, home, tmp_path, monkeypatch):
    # moto checks credentials only when asked to: a server of its own with authentication on.
    proc, endpoint = _start_moto(tmp_path / "moto-auth.log", INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        url = "s3://some-bucket/ckpt"
        _s3_env(monkeypatch, endpoint, url, AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG0", AWS_SECRET_ACCESS_KEY="nope")
        # Opening is allowed (a key limited to its prefix may not ask about the bucket); the first put says it.
        open_registry(home).close()
        store = open_store(url, blob_cache(home))
        with pytest.raises(RegistryError) as excinfo:
            store.put(_weights(1.0))
        _one_line_error(excinfo, url, "refused access", "AWS_ACCESS_KEY_ID")
        with pytest.raises(RegistryError) as excinfo:
            store.load("cd" * 32)
        _one_line_error(excinfo, url, "refused access")
    finally:
        _stop(proc)


@pytest.mark.parametrize(
    "url, says",
    [
        ("not a url", "is not a URL"),
        ("s3://", "names no bucket"),
        ("s3://Not_A_Bucket!/x", "not a valid S3 bucket name"),
        ("nosuchprotocol://bucket/x", "unknown protocol 'nosuchprotocol'"),
        ("file://relative/blobs", "not an absolute file URL"),
        ("s3://bucket/x?versionId=1", "'?' or '#'"),
        ("https://example.org/blobs", "cannot be written"),
        ("memory://bucket/blobs", "in this process only"),
        ("data://bucket/blobs", "read-only"),
        ("ftp://host/blobs", "not a store starlight supports"),
    ],
)
def test_a_malformed_store_url_is_a_one_line_error_before_anything_is_created(home, monkeypatch, url, says):
    monkeypatch.setenv("STARLIGHT_STORE_URL", url)
    with pytest.raises(RegistryError) as excinfo:
        open_registry(home)
    _one_line_error(excinfo, repr(url), says)
    assert not home.exists()


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:hunter2secret@good-bucket/ckpt",
        # AWS's own example secret: a '/' in it ends urlsplit's netloc early (half of real secrets hold one).
        "s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY@good-bucket/ckpt",
        "s3://AKIAEXAMPLE:abc?def#ghi@good-bucket/ckpt",  # '?' and '#' from an S3-compatible server's password
        "gs://someone:pass/word42@good-bucket/ckpt",
    ],
)
def test_credentials_written_into_the_url_are_refused_and_never_printed(home, monkeypatch, url):
    monkeypatch.setenv("STARLIGHT_STORE_URL", url)
    with pytest.raises(RegistryError) as excinfo:
        open_registry(home)
    msg = _one_line_error(excinfo, "carries credentials", "good-bucket")
    secret = url.partition("://")[2].rpartition("@")[0]
    assert all(part not in msg for part in secret.replace("/", ":").split(":") if part), msg
    assert not home.exists()


def test_messages_and_doctor_show_no_secret_of_any_url():
    from starcli.registry.paths import masked_url

    assert masked_url("postgresql+psycopg://me:pg/secret@db:5432/s") == "postgresql+psycopg://***@db:5432/s"
    assert masked_url("not a url me:secret@host") == "***@host"
    assert masked_url("s3://bucket/prefix") == "s3://bucket/prefix"
    # Azure's documented form names the container before '@': kept, and not taken for credentials.
    azure = "abfs://container@account.dfs.core.windows.net/ckpt"
    assert masked_url(azure) == azure


def test_an_azure_container_at_account_url_is_not_taken_for_credentials(home, monkeypatch):
    monkeypatch.setenv("STARLIGHT_STORE_URL", "abfs://container@account.dfs.core.windows.net/ckpt")
    try:
        open_registry(home).close()  # with adlfs and an account configured: it opens
    except RegistryError as e:
        assert "carries credentials" not in str(e)  # without adlfs here: "needs adlfs", not a credentials error


def test_no_credentials_at_all_is_one_line_before_anything_is_created(s3, home, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # nor an instance's role
    with pytest.raises(RegistryError) as excinfo:
        open_registry(home)
    _one_line_error(excinfo, s3.url, "no credentials", "AWS_ACCESS_KEY_ID")
    assert not home.exists()


def test_a_malformed_s3_endpoint_is_a_one_line_error(home, monkeypatch):
    _require("s3fs")
    monkeypatch.setenv("STARLIGHT_STORE_URL", "s3://bucket/x")
    monkeypatch.setenv("STARLIGHT_S3_ENDPOINT_URL", "localhost:9000")
    with pytest.raises(RegistryError) as excinfo:
        open_registry(home)
    _one_line_error(excinfo, "'localhost:9000'", "http://")


def test_the_cli_prints_a_bad_store_url_as_one_line(home, cli, monkeypatch):
    open_registry(home).close()  # a registry exists, so `list` opens it (and its store)
    monkeypatch.setenv("STARLIGHT_STORE_URL", "nosuchprotocol://bucket/x")
    code, out, err = cli("list")
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and "unknown protocol 'nosuchprotocol'" in err, err


# -- many writers ---------------------------------------------------------------------------------------

WRITERS, PER_WRITER = 4, 3


def _writer(home: str, db_url: str, worker: int, barrier) -> None:
    import torch

    torch.set_num_threads(1)
    from starcli.solutions import records

    reg = Registry(Path(home), db_url)
    barrier.wait(timeout=300)  # every process is up: the writes below overlap
    for i in range(PER_WRITER):
        records.add(reg, _weights(worker + 1.0, float(i)), **_fields(f"w{worker}-{i}", seed=i))
    # The same checkpoint from every process: one blob, one row.
    records.add(reg, _weights(-1.0), **_fields("common"))
    reg.close()


@pytest.mark.slow
def test_four_processes_registering_into_one_s3_store_lose_nothing(s3, tmp_path, monkeypatch):
    import multiprocessing

    from starcli.solutions import records

    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    Registry(tmp_path / "parent", db_url).close()  # migrate once, before the writers race
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path / f"node{w}"), db_url, w, barrier)) for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    reg = Registry(tmp_path / "fresh", db_url)  # an empty cache: every load below comes from the bucket
    rows = {s.key: s for s in records.query(reg)}
    expected = {f"w{w}-{i}": _weights(w + 1.0, float(i)) for w in range(WRITERS) for i in range(PER_WRITER)}
    expected["common"] = _weights(-1.0)
    assert sorted(rows) == sorted(expected)
    for key, tensors in expected.items():
        assert _same(records.state_dict(reg, rows[key]), tensors), key
    assert _keys(s3) == sorted(_key(s.sha256) for s in rows.values())
    assert not list((tmp_path / "fresh").rglob(".tmp-*"))
    reg.close()


# -- the local store ------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_putting_a_damaged_local_blob_again_repairs_it(reg, damage):
    sha = reg.store.put(_weights(4.0))
    path = reg.store.path(sha)
    good = path.read_bytes()
    bad = {"flip": good[:-1] + bytes([good[-1] ^ 0xFF]), "truncate": good[: len(good) // 2], "empty": b""}[damage]
    path.write_bytes(bad)
    with pytest.raises(CorruptBlobError, match=str(path)):
        reg.store.load(sha)
    assert reg.store.put(_weights(4.0)) == sha
    assert path.read_bytes() == good
    assert _same(reg.store.load(sha), _weights(4.0))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_putting_an_intact_local_blob_again_leaves_the_file_alone(reg):
    sha = reg.store.put(_weights(4.0))
    before = reg.store.path(sha).stat()
    assert reg.store.put(_weights(4.0)) == sha
    after = reg.store.path(sha).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_url_puts_the_same_layout_in_another_folder(home, tmp_path, monkeypatch):
    shared = tmp_path / "shared blobs"
    monkeypatch.setenv("STARLIGHT_STORE_URL", shared.as_uri())
    reg = open_registry(home)
    sha = reg.store.put(_weights(6.0))
    assert reg.store.path(sha) == shared / "sha256" / sha[:2] / f"{sha[2:]}.safetensors"
    assert hashlib.sha256(reg.store.path(sha).read_bytes()).hexdigest() == sha
    assert not (home / "blobs").exists()
    reg.close()


def test_without_a_store_url_the_blobs_stay_in_the_home(home, monkeypatch):
    monkeypatch.delenv("STARLIGHT_STORE_URL", raising=False)
    reg = open_registry(home)
    sha = reg.store.put(_weights(6.0))
    assert reg.store.path(sha) == home / "blobs" / "sha256" / sha[:2] / f"{sha[2:]}.safetensors"
    assert reg.store.describe() == str(home / "blobs")
    reg.close()


def test_rm_and_doctor_fix_delete_objects_in_the_bucket_and_their_cached_copies(s3, home):
    from starcli.solutions import manage, records

    reg = open_registry(home)
    gone, _ = records.add(reg, _weights(4.0), **_fields("k-gone"))
    kept, _ = records.add(reg, _weights(5.0), **_fields("k-kept", seed=2))
    orphan = reg.store.put(_weights(6.0))  # a blob whose row never came (a crash between put and insert)
    assert reg.store.shas() == sorted([gone.sha256, kept.sha256, orphan])
    assert manage.orphan_blobs(reg, grace=0) == [orphan]
    assert manage.orphan_blobs(reg) == []  # just put: it may be a writer's whose row is about to come

    assert manage.remove(reg, [gone.id]).blobs == [gone.sha256]
    assert _keys(s3) == sorted([_key(kept.sha256), _key(orphan)])
    assert not (blob_cache(home) / _key(gone.sha256)[len(PREFIX) + 1 :]).exists()  # the cached copy went too
    assert manage.gc(reg, fix=True, grace=0)["orphan_blobs"] == [orphan]
    assert _keys(s3) == [_key(kept.sha256)]
    assert _same(records.state_dict(reg, kept), _weights(5.0))
    reg.close()
