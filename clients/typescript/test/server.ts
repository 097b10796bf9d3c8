// Starts a real sqlgate (target/debug/sqlgate) on a free port against a
// fresh PostgreSQL database of its own, and reads that database with psql,
// not through sqlgate. Settings: SQLGATE_BIN, SQLGATE_TEST_POSTGRES_URL
// (default postgres://postgres@127.0.0.1:5432/postgres). Without a binary
// or a database the tests skip loudly, and fail under CI=true.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { Client } from "../src/index.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

export interface TestServer {
  baseUrl: string;
  /** Runs SQL in the test database with psql; returns its unaligned output. */
  psql(sql: string): string;
  stop(): Promise<void>;
}

/** Why the tests cannot run here, or undefined when they can. */
export function unavailable(): string | undefined {
  if (!existsSync(binary())) return `no sqlgate binary at ${binary()} (cargo build first)`;
  try {
    psql(adminUrl(), "SELECT 1");
  } catch (error) {
    return `PostgreSQL or psql unreachable: ${(error as Error).message}`;
  }
  return undefined;
}

/** Skips (loudly) or, under CI=true, fails when the tests cannot run. */
export function skipReason(): string | undefined {
  const why = unavailable();
  if (why === undefined) return undefined;
  console.log(`SKIPPING the sqlgate client tests: ${why}`);
  if (process.env.CI === "true") throw new Error(why);
  return why;
}

/** What a suite's tests use: its server and a client of it (set in `before`). */
export interface Fixture {
  server: TestServer;
  client: Client;
}

/** Starts a server and a client before the suite's tests, and stops both after. */
export function serverForSuite(): Fixture {
  const fixture = {} as Fixture;
  before(async () => {
    fixture.server = await startServer();
    fixture.client = new Client({ baseUrl: fixture.server.baseUrl, timeoutMs: 30_000 });
  });
  after(async () => {
    fixture.client?.close();
    await fixture.server?.stop();
  });
  return fixture;
}

export async function startServer(): Promise<TestServer> {
  const name = `sqlgate_ts_${randomBytes(6).toString("hex")}`;
  const admin = adminUrl();
  psql(admin, `CREATE DATABASE ${name}`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();
  const port = await freePort();
  const logPath = join(mkdtempSync(join(tmpdir(), "sqlgate-ts-")), "sqlgate.log");
  const log = openSync(logPath, "w");
  const child = spawn(binary(), ["serve", "--listen", `127.0.0.1:${port}`, "--database-url", databaseUrl], {
    stdio: ["ignore", log, log],
  });
  await waitListening(child, port, logPath);
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    psql: (sql) => psql(databaseUrl, sql),
    stop: async () => {
      const exited = new Promise((done) => child.once("exit", done));
      child.kill("SIGTERM");
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((done) => (timer = setTimeout(done, 20_000)))]);
      clearTimeout(timer);
      if (child.exitCode === null) child.kill("SIGKILL");
      psql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

function binary(): string {
  if (process.env.SQLGATE_BIN) return process.env.SQLGATE_BIN;
  return join(process.env.CARGO_TARGET_DIR ?? join(REPO, "target"), "debug", "sqlgate");
}

function adminUrl(): string {
  return process.env.SQLGATE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
}

function psql(url: string, sql: string): string {
  return execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A", "-c", sql], {
    encoding: "utf8",
    timeout: 30_000,
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}

async function waitListening(child: ChildProcess, port: number, logPath: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`sqlgate exited (${child.exitCode}) instead of listening:\n${readFileSync(logPath, "utf8")}`);
    }
    const listening = await new Promise<boolean>((done) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => (socket.destroy(), done(true)));
      socket.once("error", () => done(false));
    });
    if (listening) return;
    await new Promise((done) => setTimeout(done, 100));
  }
  child.kill("SIGKILL");
  throw new Error(`sqlgate did not listen on ${port} within 20 s`);
}
