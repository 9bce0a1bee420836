"""Moving solutions between registries, and checkpoints out to the Hugging Face / timm layout.

A bundle is a tar file (gzip-compressed when its name ends in .tar.gz/.tgz): `manifest.json` with the
rows (solutions and the barrier rows among them) and `blobs/<sha256>.safetensors`, the checkpoints as the
store keeps them. Exporting a solution also exports what it refers to (a star's anchors, an aligned
copy's source and target), so every reference resolves in the receiving registry; an export never
overwrites, writes through a link or into the home, nor leaves a partial file (targets.py).

Importing is whole or not at all: the manifest is checked by its schema (manifests.py), every member's
size from its header, every blob against its sha256 and against its row's architecture, before anything
is written; then all rows go in one transaction. It remaps ids, keeps a solution already there (same
idempotency key) only when its weights are the same, and stores each blob once. Only the members the
manifest names are read: absolute paths, `..`, links and other special members are refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from starcli.errors import StarlightError, UsageError
from starcli.registry import BarrierResult, LandscapeResult, Solution

from . import manifests, records, targets
from .manifests import FORMAT, VERSION

MANIFEST = "manifest.json"
# Limits on what a bundle may expand to, checked on each member's header before its data is read.
MAX_MANIFEST_BYTES = 64 << 20  # 10,000 solutions with their histories and configs fit in a few MiB
MAX_BLOB_BYTES = 4 << 30  # a checkpoint: a billion fp32 parameters
MAX_MEMBERS = 2 * manifests.MAX_SOLUTIONS + 1
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
        instruments = [
            r for r in s.exec(select(LandscapeResult).where(col(LandscapeResult.a_id).in_(by_id)))
            if all(i is None or i in by_id for i in (r.b_id, r.c_id))
        ]
        landscape_rows = [{"kind": r.kind, "subject": r.subject, "a_id": r.a_id, "b_id": r.b_id, "c_id": r.c_id,
                           "settings_hash": r.settings_hash, "settings": r.settings, "result": r.result,
                           "created_at": r.created_at.isoformat()} for r in instruments]
    manifest = {"format": FORMAT, "version": VERSION, "solutions": [_row(s) for s in sols], "barriers": barrier_rows}
    if landscape_rows:  # only then: a bundle without them stays readable by versions before the instruments
        manifest["landscapes"] = landscape_rows

    def write(f) -> None:
        with tarfile.open(fileobj=f, mode=mode) as tar:
            _add(tar, MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
            for sha in dict.fromkeys(s.sha256 for s in sols):
                _add(tar, f"blobs/{sha}.safetensors", reg.store.read_verified(sha))

    path.parent.mkdir(parents=True, exist_ok=True)
    targets.write_new(path, write, force)
    return {"file": str(path), "solutions": [s.id for s in sols], "blobs": len({s.sha256 for s in sols}),
            "barriers": len(barrier_rows), "landscapes": len(landscape_rows)}


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


def _members(tar: tarfile.TarFile, path: Path) -> dict[str, tarfile.TarInfo]:
    """The bundle's members, each header checked as it is read: a member over its limit is refused before
    a byte of it is decompressed (a gzip bomb expands nothing), as are unsafe names and special members."""
    members = {}
    for m in tar:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or "\\" in m.name or not m.isfile():
            raise StarlightError(f"{path} holds an unsafe member {m.name!r} (absolute, '..', a link or not a file); nothing was imported")
        limit = MAX_MANIFEST_BYTES if str(p) == MANIFEST else MAX_BLOB_BYTES
        if m.size > limit:
            raise StarlightError(f"{path}: member {m.name[:100]!r} expands to {m.size:,} bytes, over the limit of {limit:,}; nothing was imported")
        members[str(p)] = m
        if len(members) > MAX_MEMBERS:
            raise StarlightError(f"{path} holds more than {MAX_MEMBERS:,} members; nothing was imported")
    return members


class Bundle:
    """An open bundle: its checked manifest and a way to read each blob, verified against its sha256."""

    def __init__(self, path: str | Path):
        self.path = path = Path(path)
        if not path.is_file():
            raise StarlightError(f"bundle {path} does not exist (or is not a file)")
        try:
            self.tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile):
            raise StarlightError(f"{path} is not a starlight bundle (a .tar or .tar.gz written by `starlight export --bundle`)") from None
        try:
            self.members = _members(self.tar, path)
            if MANIFEST not in self.members:
                raise StarlightError(f"{path} has no {MANIFEST}; is it a bundle written by `starlight export --bundle`?")
            self.manifest = manifests.parse(self._read(MANIFEST), f"{path}: {MANIFEST}")
        except BaseException as e:
            self.tar.close()
            if isinstance(e, (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)):
                raise StarlightError(f"{path} is damaged ({type(e).__name__}: {str(e)[:200]}); nothing was imported") from None
            raise

    def _read(self, name: str) -> bytes:
        try:
            return self.tar.extractfile(self.members[name]).read()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise StarlightError(f"{self.path}: {name} cannot be read ({e}); the bundle is damaged, nothing was imported") from None

    def blob(self, sha: str, sid: int) -> bytes:
        name = f"blobs/{sha}.safetensors"
        if name not in self.members:
            raise StarlightError(f"{self.path} lacks the checkpoint of solution {sid} ({name})")
        data = self._read(name)
        if hashlib.sha256(data).hexdigest() != sha:
            raise StarlightError(f"{self.path}: {name} is damaged (its sha256 does not match); nothing was imported")
        return data

    def close(self) -> None:
        self.tar.close()


def read_bundle(path: str | Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest (as checked by its schema) and the blobs of a bundle, each blob checked against its sha256."""
    bundle = Bundle(path)
    try:
        m = bundle.manifest
        return m.model_dump(), {r.sha256: bundle.blob(r.sha256, r.id) for r in m.solutions}
    finally:
        bundle.close()


def check_rows(bundle: Bundle) -> None:
    """Everything about the rows that needs no registry: unique ids and keys, references inside the bundle
    (to earlier ids), and each blob a safetensors file whose tensors fit its row's architecture exactly."""
    path, rows = bundle.path, bundle.manifest.solutions
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids) or len({r.key for r in rows}) != len(rows):
        raise StarlightError(f"{path}: two solutions share an id or a key; nothing was imported")
    inside = set(ids)
    for row in rows:
        refs = [*row.anchors, *(getattr(row, r) for r in REFERENCES if getattr(row, r) is not None)]
        missing = [i for i in refs if i not in inside or i >= row.id]
        if missing:
            raise StarlightError(f"{path}: solution {row.id} refers to solution {missing[0]}, which the bundle lacks")
    for i, b in enumerate(bundle.manifest.barriers):
        if b.a_id not in inside or b.b_id not in inside:
            raise StarlightError(f"{path}: barrier row {i} measures pair {b.a_id}-{b.b_id}, which the bundle lacks; nothing was imported")
    for i, r in enumerate(bundle.manifest.landscapes):
        refs = [r.a_id, r.b_id, r.c_id, *map(int, r.subject.split("-"))]
        if any(x is not None and x not in inside for x in refs):
            raise StarlightError(f"{path}: {r.kind} row {i} refers to a solution the bundle lacks; nothing was imported")
    shapes: dict[str, dict[str, tuple]] = {}
    for row in rows:
        if row.sha256 not in shapes:
            shapes[row.sha256] = _tensor_shapes(bundle.blob(row.sha256, row.id), f"{path}: the checkpoint of solution {row.id}")
        _check_fits(row, shapes[row.sha256], path)


def _tensor_shapes(data: bytes, what: str) -> dict[str, tuple]:
    """The tensors' names and shapes of a safetensors file (its header and offsets checked by safetensors)."""
    from safetensors.torch import load

    try:
        return {k: tuple(v.shape) for k, v in load(data).items()}
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise StarlightError(f"{what} is not a safetensors file ({first}); nothing was imported") from None


def _check_fits(row, shapes: dict[str, tuple], path: Path) -> None:
    """The row's architecture, built on the meta device (no memory), must take exactly these tensors."""
    import torch

    from starcli import models
    from starcli.engine import data
    from starcli.engine.config import check_arch

    what = f"{path}: solution {row.id}"
    if row.dataset not in data.DATASETS:
        raise StarlightError(f"{what} names an unknown dataset {row.dataset!r}; nothing was imported")
    try:
        check_arch(row.arch, row.arch_kwargs, data.info(row.dataset), {"arch": "the bundle", "arch_kwargs": "the bundle"})
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in models.create(row.arch, **row.arch_kwargs).state_dict().items()}
    except StarlightError as e:
        raise StarlightError(f"{what}: {e}; nothing was imported") from None
    except Exception as e:
        raise StarlightError(f"{what}: {row.arch} {row.arch_kwargs} cannot be built ({type(e).__name__}); nothing was imported") from None
    if expected != shapes:
        extra, missing = sorted(set(shapes) - set(expected)), sorted(set(expected) - set(shapes))
        wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k] != expected[k])
        detail = (f"unexpected tensors {extra[:3]}" if extra else f"missing tensors {missing[:3]}" if missing
                  else f"{wrong[0]} has shape {list(shapes[wrong[0]])}, not {list(expected[wrong[0]])}")
        raise StarlightError(f"{what}: its checkpoint does not fit {row.arch} {row.arch_kwargs} ({detail}); nothing was imported")


def checked_bundle(path: str | Path) -> Bundle:
    """The bundle at `path`, opened and checked (`check_rows`) without a registry: a command can refuse a
    bad bundle before it opens (or creates) one."""
    bundle = Bundle(path)
    try:
        check_rows(bundle)
    except BaseException:
        bundle.close()
        raise
    return bundle


def import_bundle(reg, path: str | Path | Bundle) -> dict[str, Any]:
    """Add a bundle's solutions and barrier rows to `reg`, whole or not at all; returns the id map (bundle
    id → id here), which solutions were new and how many barrier rows were added.

    Every row and blob is checked first (`check_rows`; `path` may be a `checked_bundle`). The new rows'
    blobs are put, then every row and barrier row goes in one transaction, then any blob collected
    meanwhile is put back (as `records.add` does). A solution already here (same key) is kept only if it
    holds the same weights (same sha256): barrier rows and stars are never attached to other weights. A
    concurrent import of the same bundle that commits first makes this one keep its rows."""
    bundle = path if isinstance(path, Bundle) else checked_bundle(path)
    try:
        for attempt in range(3):
            try:
                return _import(reg, bundle)
            except IntegrityError:  # PostgreSQL: another import inserted the same key first; now we see it
                if attempt == 2:
                    raise StarlightError(f"{bundle.path}: other writers kept inserting the same solutions; import again") from None
    finally:
        bundle.close()
    raise AssertionError("unreachable")


def _same_weights(bundle: Bundle, row, existing: Solution) -> None:
    if existing.sha256 != row.sha256:
        raise StarlightError(
            f"{bundle.path}: solution {row.id} has the key of solution {existing.id} here but other weights "
            f"(sha256 {row.sha256[:12]}… vs {existing.sha256[:12]}…, e.g. trained on another device); "
            "nothing was imported"
        )


def _import(reg, bundle: Bundle) -> dict[str, Any]:
    rows = sorted(bundle.manifest.solutions, key=lambda r: r.id)
    present = set()
    for row in rows:  # a kept row with other weights is refused before any blob is put (and again below)
        existing = records.by_key(reg, row.key)
        if existing is not None:
            _same_weights(bundle, row, existing)
            present.add(row.key)
    new_shas = list(dict.fromkeys(r.sha256 for r in rows if r.key not in present))
    for sha in new_shas:  # before the rows: a row never points at a missing blob
        reg.store.put_bytes(bundle.blob(sha, 0))
    ids: dict[int, int] = {}
    added: list[int] = []
    added_shas: set[str] = set()
    n_barriers = 0
    with reg.session() as s:  # one transaction (on SQLite it holds the write lock from its first statement)
        records.lock_for_references(s)
        for row in rows:  # referenced solutions come first: their new ids are known when a star is added
            existing = s.exec(select(Solution).where(Solution.key == row.key)).first()
            if existing is not None:
                _same_weights(bundle, row, existing)
                ids[row.id] = existing.id
                continue
            values = row.model_dump(exclude={"id", "created_at"})
            values["anchors"] = [ids[a] for a in row.anchors]
            for ref in REFERENCES:
                if getattr(row, ref) is not None:
                    values[ref] = ids[getattr(row, ref)]
            sol = Solution(**values, created_at=row.created())
            s.add(sol)
            s.flush()
            ids[row.id] = sol.id
            added.append(sol.id)
            added_shas.add(row.sha256)
        for b in bundle.manifest.barriers:
            a, bb = ids[b.a_id], ids[b.b_id]  # both in the bundle (check_rows)
            there = s.exec(select(BarrierResult).where(
                BarrierResult.a_id == a, BarrierResult.b_id == bb, BarrierResult.settings_hash == b.settings_hash
            )).first()
            if there is None:
                s.add(BarrierResult(a_id=a, b_id=bb, settings_hash=b.settings_hash, settings=b.settings, result=b.result))
                n_barriers += 1
        n_landscapes = 0
        for r in bundle.manifest.landscapes:
            subject = "-".join(str(ids[int(x)]) for x in r.subject.split("-"))
            there = s.exec(select(LandscapeResult).where(
                LandscapeResult.kind == r.kind, LandscapeResult.subject == subject,
                LandscapeResult.settings_hash == r.settings_hash,
            )).first()
            if there is None:
                result = dict(r.result)
                if "bend_solution" in result and r.c_id is not None:  # a curve names its bend by id
                    result["bend_solution"] = ids[r.c_id]
                s.add(LandscapeResult(kind=r.kind, subject=subject, a_id=ids[r.a_id],
                                      b_id=ids[r.b_id] if r.b_id is not None else None,
                                      c_id=ids[r.c_id] if r.c_id is not None else None,
                                      settings_hash=r.settings_hash, settings=r.settings, result=result))
                n_landscapes += 1
        s.commit()
    # An orphan collection between our put and our commit may have deleted a blob no row referenced yet;
    # now rows do, so no collector deletes it again: putting it back once closes the race (records.add).
    for sha in added_shas:
        if not reg.store.holds(sha):
            reg.store.put_bytes(bundle.blob(sha, 0))
    return {"file": str(bundle.path), "ids": {str(k): v for k, v in ids.items()}, "added": added,
            "kept": [v for k, v in ids.items() if v not in added], "barriers": n_barriers, "landscapes": n_landscapes}


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
    """arch, arch_kwargs, dataset and normalisation from a `config.json` beside `model.safetensors`; a
    config of the wrong shape (model_args a list, mean a string, nested without end, too large) is one
    line naming the field."""
    if not (folder / HF_WEIGHTS).is_file() or not (folder / HF_CONFIG).is_file():
        raise StarlightError(f"{folder} is a folder without {HF_WEIGHTS} and {HF_CONFIG} (the Hugging Face / timm layout)")
    where = folder / HF_CONFIG
    if where.stat().st_size > MAX_HF_CONFIG_BYTES:
        raise StarlightError(f"{where} is larger than {MAX_HF_CONFIG_BYTES // 1024} KiB; a config.json names an architecture and its arguments")
    try:
        cfg = json.loads(where.read_bytes())
    except (ValueError, RecursionError) as e:
        raise StarlightError(f"{where} is not valid JSON: {'nested too deeply' if isinstance(e, RecursionError) else str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise StarlightError(f"{where} names no architecture")

    def field(holder: dict, name: str, kind: type, label: str):
        value = holder.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise StarlightError(f"{where}: {label} must be {_KIND_NAMES[kind]}, got {type(value).__name__}")
        return value

    pre = field(cfg, "pretrained_cfg", dict, "pretrained_cfg") or {}
    own = field(cfg, "starlight", dict, "starlight") or {}
    kwargs = dict(field(cfg, "model_args", dict, "model_args") or {})
    classes = field(cfg, "num_classes", int, "num_classes")
    if classes is not None:
        kwargs.setdefault("num_classes", classes)
    norm = {}
    for name in ("mean", "std"):
        value = pre.get(name)
        if value is not None and (not isinstance(value, list) or not value or len(value) > 64 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise StarlightError(f"{where}: pretrained_cfg.{name} must be a list of numbers, one per input channel")
        norm[name] = value
    return {
        "arch": cfg["architecture"],
        "arch_kwargs": kwargs,
        "dataset": field(own, "dataset", str, "starlight.dataset"),
        "mean": norm["mean"],
        "std": norm["std"],
    }


_KIND_NAMES = {dict: "a JSON object", int: "an integer", str: "a string"}
MAX_HF_CONFIG_BYTES = 1 << 20
