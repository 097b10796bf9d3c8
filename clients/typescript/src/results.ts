// Results as JavaScript sees them: columns, rows of native values, counts.

import type { ExecuteResponse, ResultFrame } from "./gen/sqlgate/v1/query_pb.js";
import { type Column as ColumnMessage, type Row, ValueType } from "./gen/sqlgate/v1/value_pb.js";
import { fromValue, type SqlValue } from "./values.js";

/** A result column. */
export interface Column {
  name: string;
  /** The portable type, e.g. "INT", "DECIMAL", "TIMESTAMP". */
  type: string;
  /** The database's own type name, e.g. "INT8", "NUMERIC". */
  dbType: string;
  /** Whether it may hold NULL, where the database says. */
  nullable: boolean | undefined;
}

/** The whole result of one statement. */
export interface Result {
  columns: Column[];
  /** One array of values per row, in column order. */
  rows: SqlValue[][];
  /** Rows inserted, updated or deleted (0n for a plain SELECT). */
  rowsAffected: bigint;
}

export function column(message: ColumnMessage): Column {
  return {
    name: message.name,
    type: (ValueType[message.type] ?? String(message.type)).replace(/^VALUE_TYPE_/, ""),
    dbType: message.dbType,
    nullable: message.nullable,
  };
}

export function rowValues(row: Row): SqlValue[] {
  return row.values.map(fromValue);
}

export function fromResponse(response: ExecuteResponse): Result {
  return {
    columns: response.columns.map(column),
    rows: response.rows.map(rowValues),
    rowsAffected: response.rowsAffected,
  };
}

/** Adds one streamed frame to `result`. */
export function addFrame(result: Result, frame: ResultFrame): void {
  switch (frame.frame.case) {
    case "metadata":
      result.columns = frame.frame.value.columns.map(column);
      break;
    case "rows":
      for (const row of frame.frame.value.rows) result.rows.push(rowValues(row));
      break;
    case "stats":
      result.rowsAffected = frame.frame.value.rowsAffected;
      break;
  }
}

export function emptyResult(): Result {
  return { columns: [], rows: [], rowsAffected: 0n };
}
