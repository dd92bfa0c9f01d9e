"""Audit bundles: everything an auditor needs to verify the store on another machine.

A bundle is a directory, or the same packed as .tar.gz:

    manifest.json                 format, export time, hashed columns, sha256 of every file
    records/<table>.jsonl         every row of every provenance table, canonical JSON, in
                                  partition order (emission rows carry their fx rate and
                                  emission factor provenance columns)
    chain_heads.jsonl             the head and record count of every partition
    audit_events.jsonl            the audit chain
    seals.jsonl                   the HMAC seals (the key is never exported)
    context/sync_jobs.jsonl       sync runs and earlier record versions, for reading;
    context/record_versions.jsonl they are exported as stored, not verified

Lines are canonical JSON, so parsing a line and hashing its columns gives the stored hash.
The manifest digests catch a damaged file; the chains and seals inside catch a doctored one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from erp_connector_dagster.provenance.canonical import canonical_value, encode_canonical
from erp_connector_dagster.provenance.store import (
    audit_events,
    chain_heads,
    read_snapshot,
    seals,
    stream_rows,
    table_columns,
)
from erp_connector_dagster.provenance.tables import (
    CHAIN_ORDER_COLUMNS,
    HASHED_COLUMNS,
    PARTITION_COLUMNS,
)

BUNDLE_FORMAT = "erp-connector-audit-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
EMISSION_PROVENANCE_COLUMNS = (
    "fx_rate",
    "fx_rate_date",
    "fx_provider",
    "price_index_ratio",
    "price_index_rule",
    "factor_set",
    "factor_version",
    "factor_code",
    "factor_value",
    "factor_unit",
    "mapping_rule",
    "spend_record_hash",
)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def _write_lines(root: Path, name: str, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    target = root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    lines = 0
    with target.open("wb") as handle:
        for row in rows:
            line = encode_canonical(canonical_value(row)) + b"\n"
            handle.write(line)
            digest.update(line)
            lines += 1
    return {"sha256": digest.hexdigest(), "lines": lines}


def _record_order(table: str) -> tuple[str, ...]:
    date_column = PARTITION_COLUMNS[table]
    return ("connection",) + ((date_column,) if date_column else ()) + CHAIN_ORDER_COLUMNS[table]


def _write_bundle(conn, root: Path) -> None:
    files: dict[str, dict[str, Any]] = {}
    for table in HASHED_COLUMNS:
        columns = table_columns(conn, table)
        files[f"records/{table}.jsonl"] = _write_lines(
            root, f"records/{table}.jsonl", stream_rows(conn, table, columns, _record_order(table))
        )
    files["chain_heads.jsonl"] = _write_lines(root, "chain_heads.jsonl", chain_heads(conn))
    files["audit_events.jsonl"] = _write_lines(root, "audit_events.jsonl", audit_events(conn))
    files["seals.jsonl"] = _write_lines(root, "seals.jsonl", seals(conn))
    for relation, order in (("sync_jobs", ("created_at", "id")), ("record_versions", ("id",))):
        files[f"context/{relation}.jsonl"] = _write_lines(
            root,
            f"context/{relation}.jsonl",
            stream_rows(conn, relation, table_columns(conn, relation), order),
        )

    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "exported_at": canonical_value(dt.datetime.now(dt.timezone.utc)),
        "hashed_columns": {table: list(columns) for table, columns in HASHED_COLUMNS.items()},
        "emission_provenance_columns": list(EMISSION_PROVENANCE_COLUMNS),
        "files": files,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# Limitation: the manifest's file digests are not keyed (the export has no key), so they show
# damage, not tampering; tampering shows through the chains and seals inside. The context
# files are exported for reading and are not verified.
def export_bundle(conn, path: str | Path) -> Path:
    """Write an audit bundle of the whole store to `path` (a new directory, or *.tar.gz).

    Reads one consistent snapshot (see `store.read_snapshot`); returns the path written.
    """
    path = Path(path)
    if path.exists() and (path.is_file() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists and is not an empty directory")
    with read_snapshot(conn):
        if not path.name.endswith(_ARCHIVE_SUFFIXES):
            path.mkdir(parents=True, exist_ok=True)
            _write_bundle(conn, path)
            return path
        with tempfile.TemporaryDirectory(prefix="audit-bundle-") as staging:
            _write_bundle(conn, Path(staging))
            path.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(path, "w:gz") as archive:
                for member in sorted(Path(staging).rglob("*")):
                    archive.add(member, arcname=str(member.relative_to(staging)), recursive=False)
    return path


class BundleReader:
    """Read access to the files of an unpacked bundle, confined to its folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.manifest_error: str | None = None
        try:
            self.manifest: dict[str, Any] = json.loads((self.root / MANIFEST).read_text())
            if self.manifest.get("format") != BUNDLE_FORMAT:
                self.manifest_error = "manifest.json does not describe an audit bundle"
        except (OSError, ValueError) as error:
            self.manifest = {}
            self.manifest_error = f"manifest.json unreadable: {error.__class__.__name__}"
        if not isinstance(self.manifest.get("files"), dict):
            self.manifest["files"] = {}

    def _path(self, name: str) -> Path | None:
        candidate = (self.root / name).resolve()
        return candidate if candidate.is_relative_to(self.root) else None

    def exists(self, name: str) -> bool:
        path = self._path(name)
        return path is not None and path.is_file()

    def open_binary(self, name: str) -> IO[bytes]:
        path = self._path(name)
        if path is None:
            raise FileNotFoundError(name)
        return path.open("rb")

    def open_text(self, name: str) -> IO[str]:
        path = self._path(name)
        if path is None:
            raise FileNotFoundError(name)
        return path.open("r", encoding="utf-8", newline="\n")


@contextlib.contextmanager
def open_bundle(path: str | Path) -> Iterator[BundleReader]:
    """A reader over a bundle directory, or over a .tar.gz unpacked to a temporary folder."""
    path = Path(path)
    if path.is_dir():
        yield BundleReader(path)
        return
    with tempfile.TemporaryDirectory(prefix="audit-bundle-") as staging:
        with tarfile.open(path, "r:gz") as archive:
            # The "data" filter refuses absolute paths, links out of the folder and devices.
            archive.extractall(staging, filter="data")
        yield BundleReader(Path(staging))
