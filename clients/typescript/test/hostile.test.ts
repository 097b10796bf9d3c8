// What a careless or hostile caller gets: a clear error, never a silently
// wrong value, and no session left open.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Admin } from "../src/gen/sqlgate/v1/admin_pb.js";
import { Code, Decimal, Double, LocalTime, SqlgateError, type SqlValue } from "../src/index.js";
import { serverForSuite, skipReason } from "./server.js";

const skip = skipReason();

describe("a careless caller", { skip }, () => {
  const fixture = serverForSuite();

  test("values without a lossless form are refused before sending", async () => {
    const refused: [unknown, RegExp][] = [
      [2n ** 63n, /64 bits/],
      [-(2n ** 63n) - 1n, /64 bits/],
      [2 ** 53, /bigint/],
      [new Date(NaN), /invalid Date/],
      [undefined, /undefined/],
      [new Map(), /Map/],
      [() => 1, /function/],
    ];
    for (const [value, complaint] of refused) {
      await assert.rejects(fixture.client.execute("SELECT $1", value as SqlValue), (error: Error) => {
        assert.match(error.message, /^parameter 1: /);
        assert.match(error.message, complaint);
        return true;
      });
    }
  });

  test("numbers keep their kind: whole numbers are integers unless marked", async () => {
    const { rows } = await fixture.client.execute("SELECT $1, $2, $3", 2, new Double(2), 2.5);
    assert.deepEqual(rows, [[2n, 2, 2.5]]);
  });

  test("a bad decimal or time is the server's INVALID_ARGUMENT with the field named", async () => {
    for (const value of [new Decimal("12,5"), new LocalTime("25:61")]) {
      const error = await fixture.client.execute("SELECT $1", value).catch((e: unknown) => e);
      assert.ok(error instanceof SqlgateError, String(error));
      assert.equal(error.code, Code.InvalidArgument);
      assert.equal(error.fieldViolations[0]?.field, "params[0]");
    }
  });

  test("a session's client deadline rolls it back", async () => {
    const table = `t_deadline_${Date.now()}`;
    await fixture.client.execute(`CREATE TABLE ${table} (id int8)`);
    const error = await fixture.client
      .transaction(
        async (tx) => {
          await tx.execute(`INSERT INTO ${table} VALUES (1)`);
          await tx.execute("SELECT pg_sleep(3)");
        },
        { timeoutMs: 1_000 },
      )
      .catch((e: unknown) => e);
    assert.ok(error instanceof SqlgateError, String(error));
    assert.equal(error.code, Code.DeadlineExceeded);
    assert.equal(fixture.server.psql(`SELECT count(*) FROM ${table}`), "0");
  });

  test("a statement's own timeout is sqlgate's, with its reason", async () => {
    await using tx = await fixture.client.session();
    const error = await tx.executeWith({ sql: "SELECT pg_sleep(5)", timeoutMs: 200 }).catch((e: unknown) => e);
    assert.ok(error instanceof SqlgateError, String(error));
    assert.equal(error.code, Code.DeadlineExceeded);
    assert.equal(error.reason, "DEADLINE_EXCEEDED");
  });

  test("an ended session refuses more work, and transaction control is refused", async () => {
    const tx = await fixture.client.session();
    await tx.commit();
    await assert.rejects(tx.execute("SELECT 1"), (e: SqlgateError) => e.code === Code.FailedPrecondition);
    const control = await fixture.client.transaction((t) => t.execute("COMMIT")).catch((e: unknown) => e);
    assert.ok(control instanceof SqlgateError);
    assert.equal(control.code, Code.InvalidArgument);
    await assert.rejects(fixture.client.session({ isolation: "chaos" as "serializable" }), RangeError);
  });

  test("a session ended from outside says why", async () => {
    const table = `t_terminated_${Date.now()}`;
    await fixture.client.execute(`CREATE TABLE ${table} (id int8)`);
    const admin = createClient(Admin, createGrpcTransport({ baseUrl: fixture.server.baseUrl }));
    const error = await fixture.client
      .transaction(async (tx) => {
        await tx.execute(`INSERT INTO ${table} VALUES (1)`);
        await admin.terminateSession({ sessionId: tx.sessionId }, { timeoutMs: 10_000 });
        await tx.execute("SELECT 1");
      })
      .catch((e: unknown) => e);
    assert.ok(error instanceof SqlgateError, String(error));
    assert.equal(error.code, Code.Aborted);
    assert.equal(error.metadata["end_reason"], "terminated");
    assert.equal(fixture.server.psql(`SELECT count(*) FROM ${table}`), "0");
  });

  test("requests sent together in one session run in turn", async () => {
    const answers = await fixture.client.transaction((tx) =>
      Promise.all([1n, 2n, 3n, 4n].map((n) => tx.execute("SELECT $1::int8 * 10", n))),
    );
    assert.deepEqual(
      answers.map((result) => result.rows),
      [[[10n]], [[20n]], [[30n]], [[40n]]],
    );
  });
});
