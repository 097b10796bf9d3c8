// Errors as callers want them: the gRPC code plus what sqlgate put in the
// `google.rpc` details (ErrorInfo's reason and metadata such as `sqlstate`,
// BadRequest's field violations, RetryInfo's delay). One shape for a call's
// status and for a session's in-stream `error`.
//
// A deadline that expires on the client side carries no details (the call
// ends locally), so `reason` is undefined there; one that sqlgate enforced
// has reason "DEADLINE_EXCEEDED".

import { type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { type Any, anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import type { Status } from "./gen/google/rpc/status_pb.js";

export { Code };

/** A field of the request at fault (`BadRequest`). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** A call or a session request that sqlgate (or the transport) refused. */
export class SqlgateError extends Error {
  override name = "SqlgateError";

  constructor(
    /** The gRPC status code (Connect's `Code`, numerically gRPC's). */
    readonly code: Code,
    /** sqlgate's (or the database's) message. */
    readonly rawMessage: string,
    /** `ErrorInfo.reason`, e.g. "DATABASE_ERROR", "INVALID_PARAMETER". */
    readonly reason: string | undefined = undefined,
    /** `ErrorInfo.metadata`: `sqlstate`, `statement_index`, `phase`… */
    readonly metadata: Readonly<Record<string, string>> = {},
    /** `BadRequest` field violations. */
    readonly fieldViolations: readonly FieldViolation[] = [],
    /** `RetryInfo.retry_delay` in milliseconds, when retrying later can help. */
    readonly retryDelayMs: number | undefined = undefined,
    options?: { cause?: unknown },
  ) {
    super(`${Code[code] ?? code}: ${rawMessage}`, options);
  }

  /** The database's SQLSTATE, when the database refused the statement. */
  get sqlstate(): string | undefined {
    return this.metadata["sqlstate"];
  }

  /** From any error a call threw (a ConnectError or anything else). */
  static from(error: unknown): SqlgateError {
    if (error instanceof SqlgateError) return error;
    const connect = ConnectError.from(error);
    return build(connect.code, connect.rawMessage, (desc) => connect.findDetails(desc), connect);
  }

  /** From a session's in-stream `error` (a `google.rpc.Status`). */
  static fromStatus(status: Status): SqlgateError {
    const code = status.code in Code ? (status.code as Code) : Code.Unknown;
    return build(code, status.message, (desc) => unpackAll(status.details, desc));
  }
}

function build(
  code: Code,
  message: string,
  find: <Desc extends DescMessage>(desc: Desc) => MessageShape<Desc>[],
  cause?: unknown,
): SqlgateError {
  const info = find(ErrorInfoSchema)[0];
  const violations = find(BadRequestSchema).flatMap((bad) =>
    bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })),
  );
  const retry = find(RetryInfoSchema)[0]?.retryDelay;
  const retryMs = retry ? Number(retry.seconds) * 1000 + retry.nanos / 1_000_000 : undefined;
  return new SqlgateError(code, message, info?.reason, { ...(info?.metadata ?? {}) }, violations, retryMs, {
    cause,
  });
}

function unpackAll<Desc extends DescMessage>(details: Any[], desc: Desc): MessageShape<Desc>[] {
  return details.flatMap((any) => {
    const message = anyUnpack(any, desc);
    return message ? [message] : [];
  });
}
