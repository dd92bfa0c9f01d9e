"""Read stored records back as canonical models (for the methodology and the checks)."""

from __future__ import annotations

import datetime as dt

from psycopg2 import sql

from erp_connector_dagster.records import RECORD_MODELS, CanonicalRecord, RecordKind
from erp_connector_dagster.storage.database import SCHEMA
from erp_connector_dagster.storage.writers import TABLES


def read_records(
    cursor,
    kind: RecordKind,
    connection: str,
    day: dt.date | None = None,
    *,
    include_deleted: bool = False,
) -> list[CanonicalRecord]:
    """Stored records of one connection (and day, for day-partitioned kinds), by key."""
    spec = TABLES[kind]
    model = RECORD_MODELS[kind]
    fields = [name for name in model.model_fields]
    conditions = [sql.SQL("connection = %s")]
    params: list[object] = [connection]
    if spec.partition_column is not None and day is not None:
        conditions.append(sql.SQL("{} = %s").format(sql.Identifier(spec.partition_column)))
        params.append(day)
    if spec.partition_column is not None and not include_deleted:
        conditions.append(sql.SQL("NOT source_deleted"))
    cursor.execute(
        sql.SQL("SELECT {fields} FROM {table} WHERE {conditions} ORDER BY record_key").format(
            fields=sql.SQL(", ").join(map(sql.Identifier, fields)),
            table=sql.Identifier(SCHEMA, spec.table),
            conditions=sql.SQL(" AND ").join(conditions),
        ),
        params,
    )
    return [model.model_validate(dict(zip(fields, row, strict=False))) for row in cursor.fetchall()]


def stored_connections(cursor, kind: RecordKind, day: dt.date | None = None) -> list[str]:
    """Connections that have records of `kind` (on `day`)."""
    spec = TABLES[kind]
    if spec.partition_column is None or day is None:
        cursor.execute(
            sql.SQL("SELECT DISTINCT connection FROM {} ORDER BY 1").format(
                sql.Identifier(SCHEMA, spec.table)
            )
        )
    else:
        cursor.execute(
            sql.SQL("SELECT DISTINCT connection FROM {} WHERE {} = %s ORDER BY 1").format(
                sql.Identifier(SCHEMA, spec.table), sql.Identifier(spec.partition_column)
            ),
            (day,),
        )
    return [row[0] for row in cursor.fetchall()]
