// The scenario every client runs (Rust: tests/api/client_scenario.rs,
// Python: clients/python/tests/test_scenario.py): values round-trip exactly,
// a 50,000-row stream, a session committed and one rolled back (checked in
// the database), and an error's details read.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import {
  Code,
  Decimal,
  Double,
  Instant,
  Json,
  LocalDate,
  LocalDateTime,
  LocalTime,
  SqlgateError,
  type SqlValue,
  Uuid,
} from "../src/index.js";
import { serverForSuite, skipReason } from "./server.js";

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const skip = skipReason();

function tableName(): string {
  return `t_${randomBytes(5).toString("hex")}`;
}

describe("the shared scenario", { skip }, () => {
  const fixture = serverForSuite();

  test("values round-trip exactly", async () => {
    const table = tableName();
    await fixture.client.execute(
      `CREATE TABLE ${table} (id int8 PRIMARY KEY, small int2, flag bool, ratio float8, price numeric(12,4),
        body text, raw bytea, at timestamptz, local timestamp, day date, clock time, doc jsonb, ref uuid,
        tags int8[], names text[])`,
    );
    const at = Instant.parse("2026-11-27T13:14:15.123456Z");
    const rows: SqlValue[][] = [
      [INT64_MAX, 32767n, true, 1.5, new Decimal("12.3400"), "héllo ✓", new Uint8Array([0, 255]), at,
        new LocalDateTime("1999-12-31T23:59:59.999999"), new LocalDate("2024-02-29"), new LocalTime("23:59:59.000001"),
        { a: [1, 2], b: null }, new Uuid("00000000-0000-0000-0000-000000000001"), [1n, null, INT64_MIN], ["x", null, ""]],
      [INT64_MIN, -32768n, false, new Double(-2), new Decimal("-0.0001"), "", new Uint8Array(), Instant.parse("1970-01-01T00:00:00.000001Z"),
        new LocalDateTime("2000-01-01T00:00:00"), new LocalDate("0001-01-01"), new LocalTime("00:00:00"),
        new Json([1, "two"]), new Uuid("123e4567-e89b-12d3-a456-426614174000"), [null, 5n], [null]],
      [0n, null, null, null, null, null, null, null, null, null, null, null, null, null, null],
    ];
    const placeholders = Array.from({ length: 15 }, (_, i) => `$${i + 1}`).join(", ");
    await fixture.client.executeMany(`INSERT INTO ${table} VALUES (${placeholders})`, rows);

    const back = await fixture.client.execute(`SELECT * FROM ${table} ORDER BY id DESC`);

    const expected = [rows[0], rows[2], rows[1]].map((row) =>
      row.map((value) => (value instanceof Json ? value.value : value instanceof Double ? value.value : value)),
    );
    assert.deepEqual(back.rows, expected);
    assert.equal(typeof back.rows[0][0], "bigint");
    assert.equal(String(back.rows[0][4]), "12.3400");
    assert.equal((back.rows[0][7] as Instant).toISOString(), "2026-11-27T13:14:15.123456Z");
    assert.equal(back.columns[4].type, "DECIMAL");
    const extremes = await fixture.client.execute("SELECT $1::int8, $2::int8", INT64_MIN, INT64_MAX);
    assert.deepEqual(extremes.rows, [[INT64_MIN, INT64_MAX]]);
  });

  test("a 50,000-row stream", async () => {
    let count = 0;
    let total = 0n;
    let last: SqlValue[] = [];
    for await (const row of fixture.client.stream("SELECT g, 'row ' || g FROM generate_series(1, 50000) AS g")) {
      count += 1;
      total += row[0] as bigint;
      last = row;
    }
    assert.equal(count, 50_000);
    assert.equal(total, (50_000n * 50_001n) / 2n);
    assert.deepEqual(last, [50_000n, "row 50000"]);
  });

  test("leaving a stream early cancels its statement", async () => {
    const slow = "SELECT g, CASE WHEN g > 2000 THEN pg_sleep(0.01) END FROM generate_series(1, 100000) AS g";
    for await (const row of fixture.client.stream(`/* ts-early-exit */ ${slow}`)) {
      if (row[0] === 10n) break;
    }
    const running = () =>
      fixture.server.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%ts-early-exit%' AND state = 'active' AND pid <> pg_backend_pid()",
      );
    const deadline = Date.now() + 5_000;
    while (running() !== "0" && Date.now() < deadline) await new Promise((done) => setTimeout(done, 100));
    assert.equal(running(), "0");
  });

  test("a session committed and one rolled back, checked in the database", async () => {
    const table = tableName();
    await fixture.client.execute(`CREATE TABLE ${table} (id int8 PRIMARY KEY, body text)`);

    await fixture.client.transaction(
      async (tx) => {
        await tx.execute(`INSERT INTO ${table} VALUES ($1, $2)`, 1n, "kept");
        assert.deepEqual((await tx.execute(`SELECT body FROM ${table} WHERE id = $1`, 1)).rows, [["kept"]]);
        assert.equal(fixture.server.psql(`SELECT count(*) FROM ${table}`), "0");
      },
      { isolation: "serializable", labels: { test: "commit" } },
    );

    await assert.rejects(
      fixture.client.transaction(async (tx) => {
        await tx.execute(`INSERT INTO ${table} VALUES ($1, $2)`, 2n, "gone");
        throw new Error("changed my mind");
      }),
      /changed my mind/,
    );

    {
      await using tx = await fixture.client.session();
      await tx.execute(`INSERT INTO ${table} VALUES ($1, $2)`, 3n, "disposed without commit");
    }

    {
      await using tx = await fixture.client.session();
      await tx.execute(`INSERT INTO ${table} VALUES ($1, $2)`, 4n, "committed explicitly");
      await tx.commit();
    }

    assert.equal(fixture.server.psql(`SELECT id, body FROM ${table} ORDER BY id`), "1|kept\n4|committed explicitly");
    assert.equal(
      fixture.server.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
      ),
      "0",
    );
  });

  test("an error's details are read", async () => {
    const table = tableName();
    await fixture.client.execute(`CREATE TABLE ${table} (id int8 PRIMARY KEY)`);
    await fixture.client.execute(`INSERT INTO ${table} VALUES ($1)`, 1n);

    const duplicate = await fixture.client.execute(`INSERT INTO ${table} VALUES ($1)`, 1n).catch((e: unknown) => e);
    assert.ok(duplicate instanceof SqlgateError, String(duplicate));
    assert.equal(duplicate.code, Code.AlreadyExists);
    assert.equal(duplicate.sqlstate, "23505");
    assert.equal(duplicate.reason, "DATABASE_ERROR");

    const syntax = await fixture.client.execute("SELEC 1").catch((e: unknown) => e);
    assert.ok(syntax instanceof SqlgateError);
    assert.equal(syntax.code, Code.InvalidArgument);
    assert.equal(syntax.sqlstate, "42601");

    const badDate = await fixture.client.execute("SELECT $1::date", new LocalDate("not a date")).catch((e: unknown) => e);
    assert.ok(badDate instanceof SqlgateError);
    assert.equal(badDate.reason, "INVALID_PARAMETER");
    assert.equal(badDate.fieldViolations[0]?.field, "params[0]");

    await using tx = await fixture.client.session();
    const inSession = await tx.execute(`INSERT INTO ${table} VALUES ($1)`, 1n).catch((e: unknown) => e);
    assert.ok(inSession instanceof SqlgateError);
    assert.equal(inSession.code, Code.AlreadyExists);
    assert.equal(inSession.sqlstate, "23505");
  });
});
