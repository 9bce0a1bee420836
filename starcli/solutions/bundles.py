"""Moving solutions between registries, and checkpoints out to the Hugging Face / timm layout.

A bundle is a tar file (gzip-compressed when its name ends in .gz/.tgz): `manifest.json` with the rows
(solutions and the barrier rows among them) and `blobs/<sha256>.safetensors`, the checkpoints as the
store keeps them. Exporting a solution also exports what it refers to (a star's anchors, an aligned
copy's source and target), so every reference resolves in the receiving registry. Importing remaps ids,
keeps a solution already there (same idempotency key) instead of adding a copy, stores each blob once by
its sha256 (checked against its bytes), and reads only the members the manifest names: absolute paths,
`..`, links and other special members are refused before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sqlmodel import col, select

from starcli.errors import StarlightError, UsageError
from starcli.registry import BarrierResult, Solution

from . import records, targets

FORMAT, VERSION = "starlight-bundle", 1
MANIFEST = "manifest.json"
HF_WEIGHTS, HF_CONFIG = "model.safetensors", "config.json"
REFERENCES = ("source_id", "target_id")


def _closure(reg, ids: list[int]) -> list[Solution]:
    """The solutions and everything they refer to, referenced ones first (ids increase along references)."""
    seen: dict[int, Solution] = {}
    todo = list(ids)
    while todo:
        batch = [i for i in dict.fromkeys(todo) if i not in seen]
        todo = []
        for sol in records.get_many(reg, batch):
            seen[sol.id] = sol
            todo += [*(sol.anchors or []), *(getattr(sol, r) for r in REFERENCES if getattr(sol, r) is not None)]
    return sorted(seen.values(), key=lambda s: s.id)


def _row(sol: Solution) -> dict[str, Any]:
    row = sol.model_dump()
    row["created_at"] = sol.created_at.isoformat()
    return row


def export_bundle(reg, ids: list[int], path: str | Path, force: bool = False) -> dict[str, Any]:
    """Write the bundle of `ids` (and what they refer to) to `path`; returns what it holds.

    `path` must be a new file, or with `force` a regular file, outside the home, named .tar, .tar.gz or
    .tgz (the name says the compression). The bundle is written to a temp file beside it and renamed
    into place only when complete: on any failure `path` is as it was and no temp file is left."""
    mode = bundle_mode(path)
    path = check_target(reg, path, force, "--bundle")
    sols = _closure(reg, ids)
    by_id = {s.id for s in sols}
    with reg.session() as s:
        barriers = [
            r for r in s.exec(select(BarrierResult).where(col(BarrierResult.a_id).in_(by_id)))
            if r.b_id in by_id
        ]
        barrier_rows = [{"a_id": r.a_id, "b_id": r.b_id, "settings_hash": r.settings_hash, "settings": r.settings,
                         "result": r.result, "created_at": r.created_at.isoformat()} for r in barriers]
    manifest = {"format": FORMAT, "version": VERSION, "solutions": [_row(s) for s in sols], "barriers": barrier_rows}

    def write(f) -> None:
        with tarfile.open(fileobj=f, mode=mode) as tar:
            _add(tar, MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
            for sha in dict.fromkeys(s.sha256 for s in sols):
                _add(tar, f"blobs/{sha}.safetensors", reg.store.read_verified(sha))

    path.parent.mkdir(parents=True, exist_ok=True)
    targets.write_new(path, write, force)
    return {"file": str(path), "solutions": [s.id for s in sols], "blobs": len({s.sha256 for s in sols}),
            "barriers": len(barrier_rows)}


def bundle_mode(path: str | Path) -> str:
    """tarfile's write mode for a bundle's name: the name says the compression, or it is refused."""
    name = Path(path).name
    if not str(path) or not name:
        raise UsageError("--bundle needs a file name, e.g. --bundle stars.tar.gz")
    if name.endswith((".tar.gz", ".tgz")):
        return "w:gz"
    if name.endswith(".tar"):
        return "w"
    raise UsageError(f"--bundle {name}: a bundle is a .tar, .tar.gz or .tgz file (the name says the compression)")


def check_target(reg, path: str | Path, force: bool, option: str) -> Path:
    """`path` as an export may write it: a new path, or with `force` an existing regular file (never a
    link, a folder, a device or a FIFO), and never inside the registry's home or its store."""
    path = Path(path).expanduser().absolute()
    targets.check_outside(path, _protected(reg), option)
    targets.check_writable_file(path, force, option)
    return path


def _protected(reg) -> list[Path]:
    """The folders an export never writes into: the home (registry.db, blobs, runs) and a local store."""
    out = [reg.home]
    root = getattr(reg.store, "root", None)
    if isinstance(root, Path):
        out.append(root)
    if reg.url.startswith("sqlite:///"):  # $STARLIGHT_DB_URL may keep the database elsewhere
        db = Path(reg.url.removeprefix("sqlite:///").split("?", 1)[0])
        out += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _safe_members(tar: tarfile.TarFile, path: Path) -> dict[str, tarfile.TarInfo]:
    members = {}
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or "\\" in m.name or not m.isfile():
            raise StarlightError(f"{path} holds an unsafe member {m.name!r} (absolute, '..', a link or not a file); nothing was imported")
        members[str(p)] = m
    return members


def read_bundle(path: str | Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the blobs of a bundle, each blob checked against its sha256."""
    path = Path(path)
    if not path.is_file():
        raise StarlightError(f"bundle {path} does not exist")
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise StarlightError(f"{path} is not a starlight bundle (a tar file): {e}") from None
    with tar:
        members = _safe_members(tar, path)
        if MANIFEST not in members:
            raise StarlightError(f"{path} has no {MANIFEST}; is it a bundle written by `starlight export --bundle`?")
        try:
            manifest = json.loads(tar.extractfile(members[MANIFEST]).read())
        except ValueError as e:
            raise StarlightError(f"{path}: {MANIFEST} is not valid JSON: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise StarlightError(f"{path} is not a {FORMAT} version {VERSION}")
        blobs = {}
        for row in manifest.get("solutions", []):
            sha = row.get("sha256", "")
            name = f"blobs/{sha}.safetensors"
            if sha in blobs:
                continue
            if name not in members:
                raise StarlightError(f"{path} lacks the checkpoint of solution {row.get('id')} ({name})")
            data = tar.extractfile(members[name]).read()
            if hashlib.sha256(data).hexdigest() != sha:
                raise StarlightError(f"{path}: {name} is damaged (its sha256 does not match); nothing was imported")
            blobs[sha] = data
    return manifest, blobs


def import_bundle(reg, path: str | Path) -> dict[str, Any]:
    """Add a bundle's solutions and barrier rows to `reg`; returns the id map (bundle id → id here), which
    solutions were new and how many barrier rows were added."""
    manifest, blobs = read_bundle(path)
    rows = sorted(manifest.get("solutions", []), key=lambda r: r["id"])
    inside = {r["id"] for r in rows}
    for row in rows:  # checked before anything is written: a bundle imports whole or not at all
        refs = [*(row.get("anchors") or []), *(row[r] for r in REFERENCES if row.get(r) is not None)]
        missing = [i for i in refs if i not in inside or i >= row["id"]]
        if missing:
            raise StarlightError(f"{path}: solution {row['id']} refers to solution {missing[0]}, which the bundle lacks")
    ids: dict[int, int] = {}
    added: list[int] = []
    fields = set(Solution.model_fields) - {"id"}
    for row in rows:  # referenced solutions come first: their new ids are known when a star is added
        existing = records.by_key(reg, row["key"])
        if existing is not None:
            ids[row["id"]] = existing.id
            continue
        sha = reg.store.put_bytes(blobs[row["sha256"]])
        values = {k: v for k, v in row.items() if k in fields}
        values["anchors"] = [ids[a] for a in row.get("anchors") or []]
        for ref in REFERENCES:
            if row.get(ref) is not None:
                values[ref] = ids[row[ref]]
        values["created_at"] = datetime.fromisoformat(row["created_at"]) if row.get("created_at") else datetime.utcnow()
        values["sha256"] = sha
        sol = Solution(**values)
        with reg.session() as s:
            s.add(sol)
            s.commit()
            s.refresh(sol)
        ids[row["id"]] = sol.id
        added.append(sol.id)
    n_barriers = 0
    with reg.session() as s:
        for b in manifest.get("barriers", []):
            a, bb = ids.get(b["a_id"]), ids.get(b["b_id"])
            if a is None or bb is None:
                continue
            there = s.exec(select(BarrierResult).where(
                BarrierResult.a_id == a, BarrierResult.b_id == bb, BarrierResult.settings_hash == b["settings_hash"]
            )).first()
            if there is None:
                s.add(BarrierResult(a_id=a, b_id=bb, settings_hash=b["settings_hash"], settings=b["settings"],
                                    result=b["result"]))
                n_barriers += 1
        s.commit()
    return {"file": str(path), "ids": {str(k): v for k, v in ids.items()}, "added": added,
            "kept": [v for k, v in ids.items() if v not in added], "barriers": n_barriers}


# --- the Hugging Face / timm layout ----------------------------------------------------------------


def export_hf(reg, sid: int, folder: str | Path, force: bool = False) -> dict[str, Any]:
    """`model.safetensors` + `config.json` in `folder`, as timm's hub checkpoints are laid out: the
    architecture and its arguments, the classes, the input normalisation, and starlight's own record.

    The same rules as a bundle (`check_target`) for each file, checked before anything is written; both
    are written to temp files and renamed into place together, so the folder never holds half an export."""
    from starcli.engine import data

    if not str(folder):
        raise UsageError("--hf needs a folder, e.g. --hf hub/star9")
    folder = Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--hf {folder} is a file; give a folder for {HF_WEIGHTS} and {HF_CONFIG}")
    weights, config_file = (check_target(reg, folder / name, force, "--hf") for name in (HF_WEIGHTS, HF_CONFIG))
    sol = records.get(reg, sid)
    blob = reg.store.read_verified(sol.sha256)
    try:
        meta = data.info(sol.dataset)
        norm = {"mean": list(meta.mean), "std": list(meta.std)} if meta.mean else {}
        classes = meta.num_classes
    except StarlightError:
        norm, classes = {}, sol.arch_kwargs.get("num_classes")
    told = (sol.config or {}).get("input_normalisation")  # what register was told (--mean/--std)
    if told:
        norm = {"mean": told["mean"], "std": told["std"]}
    config = {
        "architecture": sol.arch,
        "num_classes": classes,
        "model_args": sol.arch_kwargs,
        "pretrained_cfg": {**norm, "num_classes": classes},
        "starlight": {"dataset": sol.dataset, "kind": sol.kind, "seed": sol.seed, "recipe": sol.recipe,
                      "metrics": sol.metrics, "sha256": sol.sha256, "id": sol.id},
    }
    text = (json.dumps(config, indent=2, default=str) + "\n").encode()
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        targets.write_files({weights: lambda f: f.write(blob), config_file: lambda f: f.write(text)}, force)
    except BaseException:
        if made and not any(folder.iterdir()):
            folder.rmdir()  # a folder this export made is not left behind empty
        raise
    return {"folder": str(folder), "files": [HF_WEIGHTS, HF_CONFIG], "solution": sol.id}


def read_hf_config(folder: Path) -> dict[str, Any]:
    """arch, arch_kwargs, dataset and normalisation from a `config.json` beside `model.safetensors`."""
    if not (folder / HF_WEIGHTS).is_file() or not (folder / HF_CONFIG).is_file():
        raise StarlightError(f"{folder} is a folder without {HF_WEIGHTS} and {HF_CONFIG} (the Hugging Face / timm layout)")
    try:
        cfg = json.loads((folder / HF_CONFIG).read_text())
    except ValueError as e:
        raise StarlightError(f"{folder / HF_CONFIG} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise StarlightError(f"{folder / HF_CONFIG} names no architecture")
    pre = cfg.get("pretrained_cfg") or {}
    kwargs = dict(cfg.get("model_args") or {})
    if cfg.get("num_classes") is not None:
        kwargs.setdefault("num_classes", cfg["num_classes"])
    return {
        "arch": cfg["architecture"],
        "arch_kwargs": kwargs,
        "dataset": (cfg.get("starlight") or {}).get("dataset"),
        "mean": pre.get("mean"),
        "std": pre.get("std"),
    }
