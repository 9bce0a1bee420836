"""A shipped sweep on a cluster set-up gives the report of a local run: `starlight sweep linear-toy --executor ray`
on a local Ray cluster, the registry in PostgreSQL and the checkpoints in S3 (no blobs in the home), against
the same sweep run locally into a plain SQLite home.

Registry ids are each registry's own (parallel workers register in the order they finish), so the reports
are compared with every id replaced by its solution's sha256: every other number must be equal.

Needs the servers `.ci/run` starts: STARLIGHT_TEST_PG_URL (PostgreSQL) and STARLIGHT_TEST_S3_ENDPOINT (moto).
"""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from pathlib import Path

import pytest

from starcli.registry import Registry

PG_URL = os.environ.get("STARLIGHT_TEST_PG_URL")
S3_ENDPOINT = os.environ.get("STARLIGHT_TEST_S3_ENDPOINT")
SWEEP = "linear-toy"  # the smallest shipped sweep: 104 training runs, 8 stars, 8 soups, 288 barrier pairs
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="no PostgreSQL server: set STARLIGHT_TEST_PG_URL (bash .ci/run starts one)"),
    pytest.mark.skipif(not S3_ENDPOINT, reason="no S3 server: set STARLIGHT_TEST_S3_ENDPOINT (bash .ci/run starts moto)"),
]


@pytest.fixture(scope="module")
def cluster():
    """A PostgreSQL schema, an S3 bucket and a local Ray of 2 CPUs whose workers see the same variables."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    import sqlalchemy as sa

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    db_url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    bucket = f"starlight-{uuid.uuid4().hex[:16]}"
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT, region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
                      aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket=bucket)
    with pytest.MonkeyPatch.context() as mp:
        # Set before ray.init: its workers inherit this process's environment (credentials, endpoint, threads).
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        for name, value in CREDENTIALS.items():
            mp.setenv(name, value)
        mp.setenv("STARLIGHT_S3_ENDPOINT_URL", S3_ENDPOINT)
        mp.setenv("OMP_NUM_THREADS", "1")  # the thread count can change CPU bits: the same on both sides
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            yield {"db_url": db_url.render_as_string(hide_password=False), "store_url": f"s3://{bucket}/ckpt",
                   "s3": s3, "bucket": bucket}
        finally:
            ray.shutdown()
            for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
            s3.delete_bucket(Bucket=bucket)
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


# -- the reports with ids replaced by sha256 ---------------------------------------------------------------

ID_FIELDS = {"star", "soup", "id", "anchors", "held_out", "a", "b"}  # every field of the report naming a solution


def _shas(reg: Registry) -> dict[int, str]:
    from starcli.solutions import records

    return {sol.id: sol.sha256 for sol in records.query(reg)}


def _by_content(value, sha: dict[int, str], field: str | None = None):
    if isinstance(value, dict):
        return {k: _by_content(v, sha, k) for k, v in value.items() if k != "wall_seconds"}
    if isinstance(value, list):
        return [_by_content(v, sha, field) for v in value]
    if field in ID_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return sha[value]
    return value


def _csv_by_content(path: Path, sha: dict[int, str]) -> list[dict]:
    return [{k: sha[int(v)] if k in ID_FIELDS and v else v for k, v in row.items()} for row in csv.DictReader(path.open())]


def _markdown_by_content(path: Path, sha: dict[int, str]) -> str:
    lines, star_column = [], None
    for line in path.read_text().splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and "star" in cells:
            star_column = cells.index("star")
        elif line.startswith("| ") and star_column is not None and cells[star_column].isdigit():
            cells[star_column] = sha[int(cells[star_column])]
            line = " | ".join(cells)
        lines.append(re.sub(r" in \d+ s on ", " in (time) on ", line))
    return "\n".join(lines)


def _report(folder: Path, reg: Registry) -> dict:
    sha = _shas(reg)
    return {
        "results.json": _by_content(json.loads((folder / "results.json").read_text()), sha),
        "summary.csv": _csv_by_content(folder / "summary.csv", sha),
        "pairs.csv": _csv_by_content(folder / "pairs.csv", sha),
        "summary.md": _markdown_by_content(folder / "summary.md", sha),
    }


def test_by_content_replaces_every_id_and_keeps_every_number():
    # The comparison must be able to fail: a number that differs still differs once ids are replaced.
    sha = {1: "s1", 2: "s2", 3: "s3"}
    report = {"star": {"preset": "paper"}, "cells": [{"star": 3, "anchors": [1, 2], "n": 2, "pairs": [{"a": 3, "b": 1, "loss": 0.5}],
                                                      "soup": {"id": 2, "metrics": {"n": 1}}}], "wall_seconds": 9.0}
    assert _by_content(report, sha) == {"star": {"preset": "paper"}, "cells": [
        {"star": "s3", "anchors": ["s1", "s2"], "n": 2, "pairs": [{"a": "s3", "b": "s1", "loss": 0.5}], "soup": {"id": "s2", "metrics": {"n": 1}}}
    ]}
    other = json.loads(json.dumps(report))
    other["cells"][0]["pairs"][0]["loss"] = 0.25
    assert _by_content(other, sha) != _by_content(report, sha)


def test_linear_toy_on_ray_with_postgresql_and_s3_reports_what_a_local_sqlite_run_does(cluster, tmp_path, monkeypatch, cli):
    from starcli.registry import open_registry

    cluster_home, local_home = tmp_path / "cluster-home", tmp_path / "local-home"
    monkeypatch.setenv("STARLIGHT_HOME", str(cluster_home))
    monkeypatch.setenv("STARLIGHT_DB_URL", cluster["db_url"])
    monkeypatch.setenv("STARLIGHT_STORE_URL", cluster["store_url"])
    code, out, err = cli("--threads", "1", "sweep", SWEEP, "-o", str(tmp_path / "ray"), "--executor", "ray",
                         "--device", "cpu", "--json")
    assert code == 0, err[-3000:]
    on_ray = json.loads(out)
    assert on_ray["computed"] == {"training_runs": 104, "stars": 8, "soups": 8, "barrier_pairs": 288}
    reg_cluster = open_registry(cluster_home)
    assert reg_cluster.url.startswith("postgresql") and reg_cluster.store_url == cluster["store_url"]
    # The checkpoints are in the bucket, none in the home: workers needed no shared blobs folder.
    in_bucket = {o["Key"] for page in cluster["s3"].get_paginator("list_objects_v2").paginate(Bucket=cluster["bucket"])
                 for o in page.get("Contents", [])}
    shas = set(_shas(reg_cluster).values())
    assert len(shas) > 104 and {f"ckpt/sha256/{s[:2]}/{s[2:]}.safetensors" for s in shas} <= in_bucket
    assert not (cluster_home / "blobs").exists()

    monkeypatch.setenv("STARLIGHT_HOME", str(local_home))
    monkeypatch.delenv("STARLIGHT_DB_URL")
    monkeypatch.delenv("STARLIGHT_STORE_URL")
    code, out, err = cli("--threads", "1", "sweep", SWEEP, "-o", str(tmp_path / "here"), "--device", "cpu", "--json")
    assert code == 0, err[-3000:]
    here = json.loads(out)
    reg_local = open_registry(local_home)
    assert reg_local.url.startswith("sqlite") and here["computed"] == on_ray["computed"]

    cluster_report, local_report = _report(tmp_path / "ray", reg_cluster), _report(tmp_path / "here", reg_local)
    for name in local_report:
        assert cluster_report[name] == local_report[name], f"{name} differs between the Ray/PostgreSQL/S3 run and the local one"
    reg_cluster.close()
    reg_local.close()
