// Native JavaScript values to sqlgate `Value` messages and back. Every SQL
// value has one JavaScript form, both ways, so that a value a query returns
// can be passed back as a parameter unchanged:
//
//   null                 null_value
//   boolean              bool_value
//   bigint               int_value (always returned as bigint: no precision lost)
//   number               int_value when a safe integer, else float_value
//                        (an unsafe integer is refused: pass a bigint)
//   Double               float_value, for a whole number meant as a float
//   string               text_value
//   Uint8Array           bytes_value
//   Decimal              decimal_value (exact text, never a number)
//   Instant, Date        timestamp_value (an Instant keeps microseconds)
//   LocalDateTime        datetime_value (no zone)
//   LocalDate, LocalTime date_value, time_value
//   Uuid                 uuid_value
//   Json, plain object   json_value (returned parsed, as JSON.parse does)
//   Array                array_value (elements may be null)

import { create } from "@bufbuild/protobuf";
import { NullValue, type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { type Value, ValueSchema, ValueListSchema } from "./gen/sqlgate/v1/value_pb.js";

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** A value that travels as exact text (a decimal, a date…), typed so that it goes back as the same kind. */
abstract class TextForm {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
  toJSON(): string {
    return this.text;
  }
}

/** An exact SQL numeric/decimal, e.g. `new Decimal("12.3400")` (scale kept). */
export class Decimal extends TextForm {}
/** A date and time without zone, ISO-8601: `2026-11-26T14:38:41.123456`. */
export class LocalDateTime extends TextForm {}
/** A date, `YYYY-MM-DD`. */
export class LocalDate extends TextForm {}
/** A time of day, `HH:MM:SS[.ffffff]`. */
export class LocalTime extends TextForm {}
/** A UUID in its canonical hyphenated form. */
export class Uuid extends TextForm {}

/** Marks a value to be sent as JSON (needed for a top-level array or a string). */
export class Json {
  constructor(readonly value: unknown) {}
}

/** Marks a number to be sent as a double even when it is whole. */
export class Double {
  constructor(readonly value: number) {}
}

/** An instant (timestamptz) exact to the nanosecond, unlike `Date`. */
export class Instant {
  constructor(
    readonly seconds: bigint,
    readonly nanos: number,
  ) {}

  static fromDate(date: Date): Instant {
    const ms = BigInt(date.getTime());
    const seconds = ms >= 0n ? ms / 1000n : -((-ms + 999n) / 1000n);
    return new Instant(seconds, Number(ms - seconds * 1000n) * 1_000_000);
  }

  /** Parses an ISO-8601 instant with a zone, keeping up to nine fractional digits. */
  static parse(text: string): Instant {
    const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(text);
    const whole = match ? Date.parse(`${match[1]}${match[3]}`) : NaN;
    if (!match || Number.isNaN(whole)) throw new RangeError(`not an ISO-8601 instant with a zone: ${text}`);
    return new Instant(BigInt(whole / 1000), Number((match[2] ?? "").padEnd(9, "0")));
  }

  toDate(): Date {
    return new Date(Number(this.seconds) * 1000 + Math.floor(this.nanos / 1_000_000));
  }

  /** ISO-8601 in UTC with microseconds, e.g. `2026-11-27T13:14:15.123456Z`. */
  toISOString(): string {
    const base = new Date(Number(this.seconds) * 1000).toISOString().slice(0, 19);
    return `${base}.${String(Math.floor(this.nanos / 1000)).padStart(6, "0")}Z`;
  }

  toJSON(): string {
    return this.toISOString();
  }
}

/** Anything `toValue` accepts and `fromValue` returns. */
export type SqlValue =
  | null
  | boolean
  | bigint
  | number
  | string
  | Uint8Array
  | Decimal
  | Instant
  | Date
  | LocalDateTime
  | LocalDate
  | LocalTime
  | Uuid
  | Json
  | Double
  | { [key: string]: unknown }
  | SqlValue[];

/** Converts one parameter; throws for what has no lossless `Value`. */
export function toValue(native: SqlValue | undefined): Value {
  const kind = toKind(native);
  return create(ValueSchema, { kind });
}

function toKind(native: SqlValue | undefined): Value["kind"] {
  if (native === null) return { case: "nullValue", value: NullValue.NULL_VALUE };
  switch (typeof native) {
    case "boolean":
      return { case: "boolValue", value: native };
    case "bigint":
      if (native < INT64_MIN || native > INT64_MAX) throw new RangeError(`integer ${native} does not fit in 64 bits`);
      return { case: "intValue", value: native };
    case "number":
      if (Number.isInteger(native)) {
        if (!Number.isSafeInteger(native)) throw new RangeError(`integer ${native} is past 2^53 and may be inexact: pass a bigint`);
        return { case: "intValue", value: BigInt(native) };
      }
      return { case: "floatValue", value: native };
    case "string":
      return { case: "textValue", value: native };
    case "object":
      return objectKind(native);
    default:
      throw new TypeError(`no sqlgate value for ${typeof native}`);
  }
}

function objectKind(native: object): Value["kind"] {
  if (native instanceof Uint8Array) return { case: "bytesValue", value: native };
  if (native instanceof Decimal) return { case: "decimalValue", value: native.text };
  if (native instanceof LocalDateTime) return { case: "datetimeValue", value: native.text };
  if (native instanceof LocalDate) return { case: "dateValue", value: native.text };
  if (native instanceof LocalTime) return { case: "timeValue", value: native.text };
  if (native instanceof Uuid) return { case: "uuidValue", value: native.text };
  if (native instanceof Double) return { case: "floatValue", value: native.value };
  if (native instanceof Json) return { case: "jsonValue", value: JSON.stringify(native.value) };
  if (native instanceof Date) {
    if (Number.isNaN(native.getTime())) throw new RangeError("an invalid Date");
    return { case: "timestampValue", value: timestamp(Instant.fromDate(native)) };
  }
  if (native instanceof Instant) return { case: "timestampValue", value: timestamp(native) };
  if (Array.isArray(native)) {
    return { case: "arrayValue", value: create(ValueListSchema, { values: native.map(toValue) }) };
  }
  if (Object.getPrototypeOf(native) === Object.prototype || Object.getPrototypeOf(native) === null) {
    return { case: "jsonValue", value: JSON.stringify(native) };
  }
  throw new TypeError(`no sqlgate value for ${native.constructor?.name ?? "this object"}`);
}

/** Converts positional parameters, naming the one that fails. */
export function toValues(params: readonly (SqlValue | undefined)[]): Value[] {
  return params.map((param, index) => {
    try {
      return toValue(param);
    } catch (error) {
      const message = `parameter ${index + 1}: ${(error as Error).message}`;
      throw error instanceof RangeError ? new RangeError(message) : new TypeError(message);
    }
  });
}

/** Converts one result value to its JavaScript form. */
export function fromValue(value: Value): SqlValue {
  const kind = value.kind;
  switch (kind.case) {
    case undefined:
    case "nullValue":
      return null;
    case "decimalValue":
      return new Decimal(kind.value);
    case "timestampValue":
      return new Instant(kind.value.seconds, kind.value.nanos);
    case "datetimeValue":
      return new LocalDateTime(kind.value);
    case "dateValue":
      return new LocalDate(kind.value);
    case "timeValue":
      return new LocalTime(kind.value);
    case "uuidValue":
      return new Uuid(kind.value);
    case "jsonValue":
      return JSON.parse(kind.value) as SqlValue;
    case "arrayValue":
      return kind.value.values.map(fromValue);
    default:
      return kind.value;
  }
}

function timestamp(instant: Instant): Timestamp {
  return create(TimestampSchema, { seconds: instant.seconds, nanos: instant.nanos });
}
