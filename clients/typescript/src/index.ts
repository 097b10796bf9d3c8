// sqlgate's TypeScript client: SQL over gRPC as if the database were local.
//
//   const client = new Client({ baseUrl: "http://127.0.0.1:50051", timeoutMs: 10_000 });
//   await client.transaction(async (tx) => {
//     await tx.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", 1n, "hello");
//   });
//   const { rows } = await client.execute("SELECT id, body FROM notes");

export { Client, Session, type ClientOptions, type SessionOptions, type Statement } from "./client.js";
export { Code, SqlgateError, type FieldViolation } from "./errors.js";
export type { Column, Result } from "./results.js";
export {
  Decimal,
  Double,
  Instant,
  Json,
  LocalDate,
  LocalDateTime,
  LocalTime,
  Uuid,
  fromValue,
  toValue,
  type SqlValue,
} from "./values.js";
