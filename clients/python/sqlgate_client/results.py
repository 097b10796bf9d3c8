"""Results as Python sees them: columns, rows of native values, counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._proto.sqlgate.v1 import query_pb2, value_pb2
from .values import from_value


@dataclass(frozen=True)
class Column:
    """A result column."""

    #: The column's name.
    name: str
    #: The portable type, e.g. ``"INT"``, ``"DECIMAL"``, ``"TIMESTAMP"``.
    type: str
    #: The database's own type name, e.g. ``"INT8"``, ``"NUMERIC"``.
    db_type: str
    #: Whether it may hold NULL, where the database says (else ``None``).
    nullable: bool | None

    @classmethod
    def from_proto(cls, column: value_pb2.Column) -> Column:
        """Reads a ``Column`` message."""
        type_name = value_pb2.ValueType.Name(column.type).removeprefix("VALUE_TYPE_")
        nullable = column.nullable if column.HasField("nullable") else None
        return cls(column.name, type_name, column.db_type, nullable)


@dataclass
class Result:
    """The whole result of one statement."""

    columns: list[Column] = field(default_factory=list)
    #: One tuple of native values per row, in column order.
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    #: Rows inserted, updated or deleted (0 for a plain ``SELECT``).
    rows_affected: int = 0

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as ``{column name: value}``."""
        names = [c.name for c in self.columns]
        return [dict(zip(names, row)) for row in self.rows]

    def scalar(self) -> Any:
        """The first column of the first row (``None`` when there is none)."""
        return self.rows[0][0] if self.rows and self.rows[0] else None

    @classmethod
    def from_proto(cls, response: query_pb2.ExecuteResponse) -> Result:
        """Reads an ``ExecuteResponse``."""
        return cls(
            [Column.from_proto(c) for c in response.columns],
            [row_values(r) for r in response.rows],
            response.rows_affected,
        )

    def add_frame(self, frame: query_pb2.ResultFrame) -> list[tuple[Any, ...]]:
        """Adds a streamed frame; returns the rows it carried."""
        kind = frame.WhichOneof("frame")
        if kind == "metadata":
            self.columns = [Column.from_proto(c) for c in frame.metadata.columns]
        elif kind == "rows":
            rows = [row_values(r) for r in frame.rows.rows]
            self.rows.extend(rows)
            return rows
        elif kind == "stats":
            self.rows_affected = frame.stats.rows_affected
        return []


def row_values(row: value_pb2.Row) -> tuple[Any, ...]:
    """One row's values, native."""
    return tuple(from_value(v) for v in row.values)
