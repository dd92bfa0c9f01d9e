"""What several emulators render alike: exact-decimal JSON, spend documents and day ranges.

Each dialect still names, nests and pages its documents its own way; this holds the pieces that
are the same in all of them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from erp_connector_dagster.records import RecordKind, SpendDocumentType, SpendRecord
from erp_connector_dagster.sandbox.company import SandboxCompany

_DECIMAL_MARKER = "\u0000decimal:"
_MARKED_DECIMAL = re.compile(r'"\\u0000decimal:([-+0-9.Ee]+)"')
# The change stamp of a line the company gives none.
_NEVER_CHANGED = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)


def exact_json(document: object) -> str:
    """JSON text with every Decimal written as a number token with its exact digits."""

    # The standard encoder turns Decimals into floats; a marker string keeps the digits.
    def mark(value: object) -> object:
        if isinstance(value, Decimal):
            return f"{_DECIMAL_MARKER}{value}"
        raise TypeError(f"cannot encode {type(value).__name__}")

    return _MARKED_DECIMAL.sub(r"\1", json.dumps(document, default=mark, ensure_ascii=False))


@dataclass
class SpendDocument:
    """One spend document of a day: its lines share the header fields (or are broken lines)."""

    document_id: str
    document_type: SpendDocumentType
    day: dt.date
    lines: list = field(default_factory=list)

    @property
    def updated_at(self) -> dt.datetime:
        return max(line_updated(line) for line in self.lines)


def line_updated(line: SpendRecord | dict) -> dt.datetime:
    """When a spend line (or a broken line, a dict) last changed."""
    if isinstance(line, dict):
        return dt.datetime.fromisoformat(line["updated_at"])
    return line.updated_at or _NEVER_CHANGED


def spend_documents(company: SandboxCompany, day: dt.date) -> list[SpendDocument]:
    """The company's spend lines of a day grouped into documents, broken lines included."""
    documents: dict[str, SpendDocument] = {}
    for line in company.records(RecordKind.SPEND, day):
        documents.setdefault(
            line.document_id, SpendDocument(line.document_id, line.document_type, day)
        ).lines.append(line)
    for bad in company.bad_spend_lines(day):
        documents.setdefault(
            bad["document_id"], SpendDocument(bad["document_id"], SpendDocumentType.INVOICE, day)
        ).lines.append(bad)
    return list(documents.values())


def days_between(start: dt.date, end: dt.date) -> Iterable[dt.date]:
    """Every day from `start` to `end`, both included."""
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)
