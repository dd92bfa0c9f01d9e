"""Canonical record schemas: one model per kind of record, whatever ERP it came from.

Every ERP source turns its native payloads into these models, and everything downstream
(storage, provenance, methodology) reads only these. Money and quantities are `Decimal`,
timestamps are timezone-aware UTC, dates are calendar dates in the ERP's own calendar.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, field_validator


class RecordKind(str, enum.Enum):
    """The kinds of record the connector syncs."""

    SPEND = "spend"
    PURCHASE_ORDER = "purchase_order"
    PURCHASE_ORDER_LINE = "purchase_order_line"
    INVENTORY = "inventory"
    VENDOR = "vendor"
    MATERIAL = "material"


class SpendDocumentType(str, enum.Enum):
    """What kind of source document a spend line comes from."""

    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"
    CARD_CHARGE = "card_charge"


class RecordStatus(str, enum.Enum):
    """Lifecycle status as the ERP reports it; voids and deletions are kept, never dropped."""

    ACTIVE = "active"
    VOIDED = "voided"
    DELETED = "deleted"


class CanonicalRecord(BaseModel):
    """Fields every canonical record carries."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    kind: ClassVar[RecordKind]
    # The partition date field name, or None for master data that is not partitioned by day.
    partition_field: ClassVar[str | None] = None

    connection: str
    source_id: str
    updated_at: dt.datetime | None = None
    status: RecordStatus = RecordStatus.ACTIVE

    @field_validator("updated_at")
    @classmethod
    def _updated_at_is_utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("updated_at must be timezone-aware")
        return value.astimezone(dt.timezone.utc)

    @property
    def natural_key(self) -> str:
        """The key that identifies this record within its connection and kind."""
        raise NotImplementedError

    @property
    def partition_date(self) -> dt.date | None:
        if self.partition_field is None:
            return None
        return getattr(self, self.partition_field)


class Vendor(CanonicalRecord):
    """A supplier from the ERP's vendor master."""

    kind: ClassVar[RecordKind] = RecordKind.VENDOR

    vendor_id: str
    name: str
    country: str | None = None
    industry_code: str | None = None
    tax_id: str | None = None
    currency: str | None = None

    @property
    def natural_key(self) -> str:
        return self.vendor_id


class Material(CanonicalRecord):
    """An item or material from the ERP's material master."""

    kind: ClassVar[RecordKind] = RecordKind.MATERIAL

    material_id: str
    description: str
    material_group: str | None = None
    base_unit: str | None = None
    commodity_code: str | None = None

    @property
    def natural_key(self) -> str:
        return self.material_id


class SpendRecord(CanonicalRecord):
    """One line of a supplier invoice, credit note or card charge, signed: credits are negative."""

    kind: ClassVar[RecordKind] = RecordKind.SPEND
    partition_field: ClassVar[str | None] = "transaction_date"

    document_id: str
    line_number: int
    document_type: SpendDocumentType
    transaction_date: dt.date
    vendor_id: str | None
    material_id: str | None = None
    gl_account: str | None = None
    description: str | None = None
    amount: Decimal
    currency: str
    quantity: Decimal | None = None
    unit: str | None = None
    is_capex: bool = False
    purchase_order_id: str | None = None

    @property
    def natural_key(self) -> str:
        # Most ERPs store the supplier's own invoice number, unique per supplier only: two
        # suppliers may both send invoice 1001, so the supplier is part of the key.
        return f"{self.vendor_id or '-'}/{self.document_id}/{self.line_number}"


class PurchaseOrder(CanonicalRecord):
    """A purchase order header."""

    kind: ClassVar[RecordKind] = RecordKind.PURCHASE_ORDER
    partition_field: ClassVar[str | None] = "order_date"

    purchase_order_id: str
    vendor_id: str | None
    order_date: dt.date
    currency: str
    total_amount: Decimal
    order_status: str

    @property
    def natural_key(self) -> str:
        return self.purchase_order_id


class PurchaseOrderLine(CanonicalRecord):
    """A purchase order line; partitioned by its header's order date."""

    kind: ClassVar[RecordKind] = RecordKind.PURCHASE_ORDER_LINE
    partition_field: ClassVar[str | None] = "order_date"

    purchase_order_id: str
    line_number: int
    order_date: dt.date
    material_id: str | None = None
    description: str | None = None
    quantity: Decimal
    unit: str | None = None
    unit_price: Decimal
    amount: Decimal
    currency: str
    gl_account: str | None = None
    delivery_date: dt.date | None = None

    @property
    def natural_key(self) -> str:
        return f"{self.purchase_order_id}/{self.line_number}"


class InventorySnapshot(CanonicalRecord):
    """Quantity on hand of one material at one location on one day."""

    kind: ClassVar[RecordKind] = RecordKind.INVENTORY
    partition_field: ClassVar[str | None] = "snapshot_date"

    snapshot_date: dt.date
    material_id: str
    location: str
    quantity: Decimal
    unit: str | None = None
    unit_cost: Decimal | None = None
    value: Decimal | None = None
    currency: str | None = None

    @property
    def natural_key(self) -> str:
        return f"{self.material_id}@{self.location}"


RECORD_MODELS: dict[RecordKind, type[CanonicalRecord]] = {
    RecordKind.SPEND: SpendRecord,
    RecordKind.PURCHASE_ORDER: PurchaseOrder,
    RecordKind.PURCHASE_ORDER_LINE: PurchaseOrderLine,
    RecordKind.INVENTORY: InventorySnapshot,
    RecordKind.VENDOR: Vendor,
    RecordKind.MATERIAL: Material,
}


class RejectedRecord(BaseModel):
    """A native record that could not become a canonical one, kept with the reason."""

    model_config = ConfigDict(frozen=True)

    connection: str
    kind: RecordKind
    source_id: str | None
    reason: str
    payload: dict
    partition_date: dt.date | None = None
