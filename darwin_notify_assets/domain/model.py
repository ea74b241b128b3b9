"""The source model: every table, key, column and relation darwin-notify reads, as data.

A deployment describes its own schema in one YAML file (``DARWIN_NOTIFY_SOURCE_MODEL``); the
sample darwin.Cloud's file ships in the package and is the default. The file is validated on
load; an error names the file, the line and path inside it, and the problem.
"""

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from darwin_notify_assets.domain import keys, zones
from darwin_notify_assets.errors import ConfigurationError

AGENT_YEAR = "agent"


@dataclass(frozen=True)
class Problem:
    """A name in the model that the database lacks: where in the model, which table, what."""

    path: str
    table: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


SAMPLE_MODEL = Path(__file__).resolve().parent.parent / "sample" / "darwin_cloud.model.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SoftDelete(_Strict):
    """Deletion by an UPDATE: a timestamp column set when the row is deleted
    (``{soft_delete: DeletedAt}``), or a flag with the column the same update dates the
    deletion by (``{soft_delete: IsDeleted, at: ChangedAt}``)."""

    soft_delete: str
    at: str | None = None

    @property
    def time_column(self) -> str:
        return self.at or self.soft_delete

    def deleted(self, row: Mapping[str, Any]) -> bool:
        value = row.get(self.soft_delete)
        if self.at is None:
            return value is not None
        return value not in (None, False, 0, "0", "")


# SQL Server's own rule for a capture instance name is sysname of at most 100 characters; it is
# formatted into a function name (cdc.fn_cdc_get_all_changes_<name>), so only plain ones.
_CAPTURE_INSTANCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class CdcDeletions(_Strict):
    """Deletions read from SQL Server Change Data Capture: the table's capture instance
    (``{cdc: dbo_Listing}``)."""

    cdc: str

    @field_validator("cdc")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _CAPTURE_INSTANCE.match(value):
            raise ValueError(
                f"capture instance {value!r} must be letters, digits and _ (at most 100), "
                "not starting with a digit"
            )
        return value


def _key_columns(value: str | tuple[str, ...]) -> str | tuple[str, ...]:
    """A key of one column is its name; a composite key its names, distinct, in order."""
    if isinstance(value, str):
        return value
    if not value:
        raise ValueError("a key names at least one column")
    if len(set(value)) != len(value):
        raise ValueError(f"key {list(value)} names a column twice")
    return value[0] if len(value) == 1 else value


class SourceTable(_Strict):
    """One table darwin-notify may read; its primary key is one column (``key: ListingNo``,
    an integer) or several (``key: [ListingNo, ShowingSeq]``)."""

    key: str | tuple[str, ...]
    watch: tuple[str, ...] = ()
    # The column that dates a record's creation: an update read inside the window that
    # created the record has no earlier version to compare with.
    created: str | None = None
    deletions: Literal["tombstone"] | SoftDelete | CdcDeletions | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        return _key_columns(value)

    @property
    def key_columns(self) -> tuple[str, ...]:
        return keys.columns(self.key)

    @property
    def soft_delete(self) -> SoftDelete | None:
        return self.deletions if isinstance(self.deletions, SoftDelete) else None

    @property
    def capture_instance(self) -> str | None:
        return self.deletions.cdc if isinstance(self.deletions, CdcDeletions) else None


class Tombstone(_Strict):
    """A table with one row per deleted record. ``key_column`` is one column, or a list when
    a tombstoned table's key is composite: a record of a table whose key has n columns is
    named by the first n of them."""

    table: str
    table_column: str
    key_column: str | tuple[str, ...]
    time_column: str

    @field_validator("key_column")
    @classmethod
    def _key(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        return _key_columns(value)

    @property
    def key_columns(self) -> tuple[str, ...]:
        return keys.columns(self.key_column)


class OptIn(_Strict):
    email: str | None = None
    sms: str | None = None


class ZoneHop(_Strict):
    """One foreign key on the way to a recipient's time zone: ``column`` of the table before
    names a row of ``to`` by its key."""

    column: str
    to: str


class TimeZoneSource(_Strict):
    """Where a recipient's time zone (an IANA name, like ``America/Chicago``) is read: a column
    of the recipient's own table (``{column: TimeZone}``); a column of the office its agent
    works in (``{office: TimeZone}``, through ``relations.agent_office``; an agent's own
    office, a contact's agent's, the agent named by ``relations.record_agent`` of the
    contact table); or a column at the end of a path of foreign keys from the recipient's
    table (``{via: [{column: RegionNo, to: crm.Region}], column: TZ}``)."""

    column: str | None = None
    office: str | None = None
    via: list[ZoneHop] | None = None

    @model_validator(mode="after")
    def _one(self) -> "TimeZoneSource":
        if (self.column is None) == (self.office is None):
            raise ValueError("time_zone names exactly one of column or office")
        if self.via is not None and self.column is None:
            raise ValueError("time_zone with via names the column of its last table")
        if self.via is not None and not self.via:
            raise ValueError("time_zone via lists at least one foreign key")
        return self


class Recipient(_Strict):
    """A kind of person a message is addressed to."""

    table: str
    key: str
    first_name: str | None = None
    last_name: str | None = None
    email: str
    phone: str
    active: str | None = None
    opt_in: OptIn | None = None
    # Quiet hours and daily caps are local to it; none: the configured default zone.
    time_zone: TimeZoneSource | None = None

    def opt_in_column(self, channel: str) -> str | None:
        return getattr(self.opt_in, channel, None) if self.opt_in else None


class ForeignKey(_Strict):
    from_: str = Field(alias="from")
    column: str
    to: str


class OneToMany(_Strict):
    table: str
    column: str


class JoinTable(_Strict):
    """Many contacts per record: rows of ``through`` pairing ``record`` (the record's key)
    with ``contact`` (a contact's key)."""

    through: str
    record: str
    contact: str


class Related(_Strict):
    """A record a template shows beside the changed one: ``column`` of the changed record's
    table names a row of ``to`` by its key."""

    column: str
    to: str


# What a template's context already names (``delivery/workers.py``): a related record may not
# take one of these names.
CONTEXT_NAMES = (
    "record",
    "records",
    "agent",
    "office",
    "recipient",
    "change",
    "window",
    "extra",
    "totals",
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Relations(_Strict):
    agent_office: ForeignKey | None = None
    record_agent: dict[str, str] = Field(default_factory=dict)
    record_contact: dict[str, str] = Field(default_factory=dict)
    agent_contacts: OneToMany | None = None
    # Per table, the contacts a record reaches through a join table (audience record_contacts).
    record_contacts: dict[str, JoinTable] = Field(default_factory=dict)
    # Per table, the records its templates show beside a changed one, by the name they see.
    related: dict[str, dict[str, Related]] = Field(default_factory=dict)


class Condition(_Strict):
    """A row counts when ``column`` equals ``equals``."""

    column: str
    equals: str | int

    def holds(self, row: Mapping[str, Any]) -> bool:
        value = row.get(self.column)
        return value is not None and str(value) == str(self.equals)


class DealLedger(_Strict):
    table: str
    key: str
    agent: str
    posted: str
    volume: str
    commission: str
    watch: str
    # Beside a posted date in the year, a further condition a deal must meet to count.
    counts_when: Condition | None = None


class ListingLedger(_Strict):
    table: str
    key: str
    agent: str
    status: str
    active_value: str
    watch: str


class Totals(_Strict):
    deals: DealLedger
    listings: ListingLedger
    # Whose year "year to date" is: ``agent`` (from January 1 in the agent's time zone,
    # ``recipients.agent.time_zone``), or one IANA zone for every agent.
    year_time_zone: str = "UTC"

    @field_validator("year_time_zone")
    @classmethod
    def _year_zone(cls, value: str) -> str:
        if value != AGENT_YEAR and zones.zone_info(value) is None:
            raise ValueError(
                f"year_time_zone is {AGENT_YEAR!r} or an IANA time zone (America/Chicago), "
                f"not {value!r}"
            )
        return value

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.deals.table, self.listings.table)


class Tenant(_Strict):
    """Who a record belongs to among the customer's tenants (an office): schedules of one
    tenant name ``column`` in their criteria. A table without the column is in its agent's
    tenant: the agent table's ``column``."""

    column: str


SCHEDULE_FIELDS = (
    "schedule_id",
    "name",
    "source_table",
    "event_type",
    "watch_column",
    "changed_columns",
    "criteria",
    "channel",
    "audience",
    "template_id",
    "dedupe_scope",
    "uses_agent_totals",
    "is_active",
)
TEMPLATE_FIELDS = ("template_id", "name", "subject", "html_body", "text_body", "sms_body")
# Fields a schedule or template table may map, and need not (docs/source-model.md).
OPTIONAL_FIELDS = ("merge_fields",)


class ConfigTable(_Strict):
    """Where the schedules (or templates) are, and what their columns are called."""

    table: str
    columns: dict[str, str]


class SourceModel(_Strict):
    """The whole model; see docs/source-model.md."""

    version: Literal[1]
    tables: dict[str, SourceTable]
    tombstone: Tombstone | None = None
    recipients: dict[Literal["agent", "contact"], Recipient]
    relations: Relations = Field(default_factory=Relations)
    totals: Totals | None = None
    tenant: Tenant | None = None
    schedules: ConfigTable
    templates: ConfigTable

    @model_validator(mode="after")
    def _consistent(self) -> "SourceModel":
        for name in self._table_names():
            parts = name.split(".")
            if len(parts) > 2 or not all(p.strip() for p in parts):
                raise ValueError(f"table name {name!r} must be 'table' or 'schema.table'")
        for field_name, cfg, needed in (
            ("schedules", self.schedules, SCHEDULE_FIELDS),
            ("templates", self.templates, TEMPLATE_FIELDS),
        ):
            missing = [f for f in needed if f not in cfg.columns]
            unknown = [f for f in cfg.columns if f not in needed and f not in OPTIONAL_FIELDS]
            if missing:
                raise ValueError(f"{field_name}.columns misses {', '.join(missing)}")
            if unknown:
                raise ValueError(f"{field_name}.columns has unknown {', '.join(unknown)}")
        if any(t.deletions == "tombstone" for t in self.tables.values()) and not self.tombstone:
            raise ValueError("a table's deletions are 'tombstone' but no tombstone is described")
        for name, described_table in self.tables.items():
            width = len(described_table.key_columns)
            if width == 1:
                continue
            if described_table.deletions == "tombstone" and self.tombstone:
                if len(self.tombstone.key_columns) < width:
                    raise ValueError(
                        f"tables.{name}: its key has {width} columns, the tombstone's "
                        f"key_column {len(self.tombstone.key_columns)}"
                    )
            if name in self.relations.record_contacts:
                raise ValueError(
                    f"relations.record_contacts.{name}: a join table names a record by one "
                    f"column, and {name}'s key is composite"
                )
        for kind, recipient in self.recipients.items():
            listed = self.tables.get(recipient.table)
            if listed is not None and not isinstance(listed.key, str):
                raise ValueError(
                    f"recipients.{kind}: {recipient.table}'s key is composite; a recipient "
                    "table's key is one column"
                )
        for kind in ("agent", "contact"):
            if kind not in self.recipients:
                raise ValueError(f"recipients misses {kind}")
        for name, rel in (
            ("record_agent", self.relations.record_agent),
            ("record_contact", self.relations.record_contact),
            ("record_contacts", self.relations.record_contacts),
        ):
            for table in rel:
                if table not in self.tables:
                    raise ValueError(f"relations.{name} names {table}, which tables lacks")
        office = self.relations.agent_office
        described = set(self.tables) | {r.table for r in self.recipients.values()}
        for table, named in self.relations.related.items():
            if table not in self.tables:
                raise ValueError(f"relations.related names {table}, which tables lacks")
            for name, link in named.items():
                path = f"relations.related.{table}.{name}"
                if not _NAME.match(name) or name in CONTEXT_NAMES:
                    raise ValueError(
                        f"{path}: a related record's name is a word templates can use and "
                        f"none of {', '.join(CONTEXT_NAMES)}"
                    )
                if link.to not in described:
                    raise ValueError(f"{path} names {link.to}, which tables lacks")
                if not isinstance(self.key_of(link.to), str):
                    raise ValueError(
                        f"{path}: {link.to}'s key is composite; a related record is named by "
                        "one column"
                    )
        if office and office.to not in described:
            raise ValueError(f"relations.agent_office names {office.to}, which tables lacks")
        for kind, recipient in self.recipients.items():
            zone = recipient.time_zone
            for n, hop in enumerate(zone.via or () if zone else ()):
                if hop.to not in described:
                    raise ValueError(
                        f"recipients.{kind}.time_zone.via.{n} names {hop.to}, which tables lacks"
                    )
                if not isinstance(self.key_of(hop.to), str):
                    raise ValueError(
                        f"recipients.{kind}.time_zone.via.{n}: {hop.to}'s key is composite; "
                        "a foreign key on the way to a time zone names one column"
                    )
            if zone is None or zone.office is None:
                continue
            if office is None:
                raise ValueError(
                    f"recipients.{kind}.time_zone names an office column, but "
                    "relations.agent_office is not described"
                )
            if kind == "contact" and recipient.table not in self.relations.record_agent:
                raise ValueError(
                    f"recipients.contact.time_zone names an office column, but "
                    f"relations.record_agent does not name the agent of {recipient.table}"
                )
        if self.totals:
            if self.totals.year_time_zone == AGENT_YEAR and self.agent.time_zone is None:
                raise ValueError(
                    "totals.year_time_zone is 'agent', but recipients.agent has no time_zone"
                )
            for ledger in (self.totals.deals, self.totals.listings):
                if ledger.table not in self.tables:
                    raise ValueError(f"totals names {ledger.table}, which tables lacks")
                if not isinstance(self.tables[ledger.table].key, str):
                    raise ValueError(
                        f"totals names {ledger.table}, whose key is composite; a ledger "
                        "table's key is one column"
                    )
        return self

    def _table_names(self) -> list[str]:
        names = [*self.tables, self.schedules.table, self.templates.table]
        names += [r.table for r in self.recipients.values()]
        if self.tombstone:
            names.append(self.tombstone.table)
        if self.relations.agent_office:
            names += [self.relations.agent_office.from_, self.relations.agent_office.to]
        if self.relations.agent_contacts:
            names.append(self.relations.agent_contacts.table)
        names += [j.through for j in self.relations.record_contacts.values()]
        for recipient in self.recipients.values():
            if recipient.time_zone and recipient.time_zone.via:
                names += [hop.to for hop in recipient.time_zone.via]
        return names

    def tables_read(self) -> list[str]:
        """Every table darwin-notify reads through the model, once each, in the model's order:
        what the replica's login needs SELECT on (``darwin-notify grants``)."""
        return list(dict.fromkeys(self._table_names()))

    # -- lookups the stages make -----------------------------------------------------------
    def key_of(self, table: str) -> str | tuple[str, ...]:
        """A table's key: its column's name, or the names of a composite key's columns."""
        if table in self.tables:
            return self.tables[table].key
        for recipient in self.recipients.values():
            if recipient.table == table:
                return recipient.key
        raise ConfigurationError(f"the source model describes no table {table!r}")

    @property
    def agent(self) -> Recipient:
        return self.recipients["agent"]

    @property
    def contact(self) -> Recipient:
        return self.recipients["contact"]

    def agent_column(self, table: str) -> str | None:
        """The column of ``table`` naming its agent (the agent table's own key)."""
        if table == self.agent.table:
            return self.agent.key
        return self.relations.record_agent.get(table)

    def contact_column(self, table: str) -> str | None:
        return self.relations.record_contact.get(table)

    def key_columns(self, table: str) -> tuple[str, ...]:
        return keys.columns(self.key_of(table))

    def soft_delete_of(self, table: str) -> SoftDelete | None:
        return self.tables[table].soft_delete if table in self.tables else None

    def tombstoned(self, tables: Sequence[str]) -> list[str]:
        """Those of ``tables`` whose deletions the tombstone records."""
        return [t for t in tables if t in self.tables and self.tables[t].deletions == "tombstone"]

    def capture_instance_of(self, table: str) -> str | None:
        return self.tables[table].capture_instance if table in self.tables else None

    @property
    def cdc_tables(self) -> dict[str, str]:
        """The tables whose deletions Change Data Capture records, with their capture
        instances."""
        return {n: t.capture_instance for n, t in self.tables.items() if t.capture_instance}

    def watch_of(self, table: str) -> tuple[str, ...]:
        return self.tables[table].watch if table in self.tables else ()

    def created_of(self, table: str) -> str | None:
        return self.tables[table].created if table in self.tables else None

    def ledger_kind(self, table: str) -> str | None:
        """``deal`` or ``listing`` when ``table`` feeds the agent totals."""
        if self.totals is None:
            return None
        if table == self.totals.deals.table:
            return "deal"
        if table == self.totals.listings.table:
            return "listing"
        return None


def _line_of(root: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """The 1-based line of the key at ``loc`` (or of its deepest existing parent)."""
    if not loc:
        return None
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _loc_of(root: yaml.Node | None, dotted: str) -> list[Any]:
    """The path of keys a whole-model problem names (``tables.crm.Showing``: a table's name
    may hold a dot), as far as the document has it."""
    parts, node = dotted.split("."), root
    loc: list[Any] = []
    while parts:
        if isinstance(node, yaml.MappingNode):
            keys_here = {k.value: v for k, v in node.value}
            for n in range(len(parts), 0, -1):
                name = ".".join(parts[:n])
                if name in keys_here:
                    loc.append(name)
                    node, parts = keys_here[name], parts[n:]
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and parts[0].isdigit():
            index = int(parts.pop(0))
            if index >= len(node.value):
                break
            loc.append(index)
            node = node.value[index]
        else:
            break
    return loc


_VALUE_ERROR = "Value error, "


def parse_model(text: str, source: str = "<model>") -> SourceModel:
    """Validate a model's YAML text; raise ConfigurationError naming file, line, path, problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigurationError(
            f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source}: a source model is a mapping of sections")
    try:
        return SourceModel.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            # A Literal-keyed dict reports the key's own check as a further path part.
            msg = err["msg"]
            if not loc and msg.startswith(_VALUE_ERROR):
                # a problem across sections names its path first: point at that line
                msg = msg[len(_VALUE_ERROR) :]
                line = _line_of(root, _loc_of(root, msg.split(" ", 1)[0].rstrip(":")))
                problems.append(f"{source}:{line}: {msg}" if line else f"{source}: {msg}")
                continue
            path = ".".join(str(p) for p in loc if p != "[key]") or "(top)"
            line = _line_of(root, [p for p in loc if p != "[key]"])
            where = f"{source}:{line}" if line else source
            problems.append(f"{where}: {path}: {msg}")
        raise ConfigurationError("; ".join(problems)) from None


def load_model(path: str | Path | None = None) -> SourceModel:
    """The model at ``path``, or the sample darwin.Cloud's when none is given."""
    return _load(str(Path(path).resolve()) if path else str(SAMPLE_MODEL))


@functools.lru_cache(maxsize=8)
def _load(path: str) -> SourceModel:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the source model ({exc.strerror})") from None
    return parse_model(text, path)


def check_model(model: SourceModel, columns_of: Callable[[str], Sequence[str]]) -> list[Problem]:
    """Every name the model gives that the database's catalog lacks, one problem each.

    ``columns_of`` answers a table's columns (empty when the table does not exist).
    """
    problems: list[Problem] = []
    known: dict[str, set[str]] = {}

    def has(path: str, table: str, *columns: str | None) -> None:
        if table not in known:
            known[table] = set(columns_of(table))
        if not known[table]:
            problems.append(Problem(path, table, f"table {table} does not exist on the replica"))
            return
        for col in columns:
            if col is not None and col not in known[table]:
                problems.append(
                    Problem(path, table, f"column {table}.{col} does not exist on the replica")
                )

    for name, table in model.tables.items():
        has(f"tables.{name}", name, *table.key_columns, *table.watch, table.created)
        if table.soft_delete:
            soft = table.soft_delete
            has(f"tables.{name}.deletions", name, soft.soft_delete, soft.at)
    if model.tombstone:
        t = model.tombstone
        has("tombstone", t.table, t.table_column, *t.key_columns, t.time_column)
    for kind, r in model.recipients.items():
        opt = r.opt_in or OptIn()
        has(f"recipients.{kind}", r.table, r.key, r.first_name, r.last_name, r.email, r.phone)
        has(f"recipients.{kind}", r.table, r.active, opt.email, opt.sms)
        if r.time_zone and r.time_zone.column:
            before = r.table
            for n, hop in enumerate(r.time_zone.via or ()):
                has(f"recipients.{kind}.time_zone.via.{n}", before, hop.column)
                has(f"recipients.{kind}.time_zone.via.{n}", hop.to, *model.key_columns(hop.to))
                before = hop.to
            has(f"recipients.{kind}.time_zone", before, r.time_zone.column)
        if r.time_zone and r.time_zone.office and model.relations.agent_office:
            office_table = model.relations.agent_office.to
            has(f"recipients.{kind}.time_zone", office_table, r.time_zone.office)
    rel = model.relations
    if rel.agent_office:
        has("relations.agent_office", rel.agent_office.from_, rel.agent_office.column)
        has(
            "relations.agent_office",
            rel.agent_office.to,
            *keys.columns(model.key_of(rel.agent_office.to)),
        )
    for name, mapping in (
        ("record_agent", rel.record_agent),
        ("record_contact", rel.record_contact),
    ):
        for table_name, column in mapping.items():
            has(f"relations.{name}.{table_name}", table_name, column)
    if rel.agent_contacts:
        has("relations.agent_contacts", rel.agent_contacts.table, rel.agent_contacts.column)
    for table_name, join in rel.record_contacts.items():
        has(f"relations.record_contacts.{table_name}", join.through, join.record, join.contact)
    for table_name, named in rel.related.items():
        for name, related in named.items():
            path = f"relations.related.{table_name}.{name}"
            has(path, table_name, related.column)
            has(path, related.to, *model.key_columns(related.to))
    if model.totals:
        d, li = model.totals.deals, model.totals.listings
        has("totals.deals", d.table, d.key, d.agent, d.posted, d.volume, d.commission, d.watch)
        if d.counts_when:
            has("totals.deals.counts_when", d.table, d.counts_when.column)
        has("totals.listings", li.table, li.key, li.agent, li.status, li.watch)
    if model.tenant:
        has("tenant", model.agent.table, model.tenant.column)
    for name, cfg in (("schedules", model.schedules), ("templates", model.templates)):
        has(name, cfg.table, *cfg.columns.values())
    # One problem once, even when two paths name the same missing table.
    return list(dict.fromkeys(problems))
