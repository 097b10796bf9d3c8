// The client: one-statement calls, streams, batches and sessions over
// @connectrpc/connect-node's gRPC transport.

import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError, type Client as RpcClient, type Transport, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import type { SecureClientSessionOptions } from "node:http2";
import { Query } from "./gen/sqlgate/v1/query_pb.js";
import {
  IsolationLevel,
  type SessionRequest,
  SessionRequestSchema,
  type SessionResponse,
  Sessions,
} from "./gen/sqlgate/v1/session_pb.js";
import { Code, SqlgateError } from "./errors.js";
import { addFrame, emptyResult, fromResponse, type Result, rowValues } from "./results.js";
import { type SqlValue, toValues } from "./values.js";

/** How to reach sqlgate. */
export interface ClientOptions {
  /** e.g. "http://127.0.0.1:50051" (plain) or "https://…" (TLS). */
  baseUrl?: string;
  /** Default deadline of each call, and of a whole session (ms); 30 s. */
  timeoutMs?: number;
  /** Headers sent with every call (e.g. `authorization`). */
  headers?: Record<string, string>;
  /** TLS settings (`ca`, `cert`, `key`…) for an https baseUrl. */
  tls?: SecureClientSessionOptions;
  /** A ready transport, instead of baseUrl (then `close()` leaves it open). */
  transport?: Transport;
}

/** A statement of a batch: its SQL alone, or with its parameters. */
export type Statement = string | { sql: string; params?: SqlValue[] };

/** How a session begins. */
export interface SessionOptions {
  isolation?: "read_uncommitted" | "read_committed" | "repeatable_read" | "serializable";
  readOnly?: boolean;
  /** Shown by Admin.ListSessions; never put data here. */
  labels?: Record<string, string>;
  /** sqlgate rolls the session back after this long without a request. */
  idleTimeoutMs?: number;
  /** Deadline of the whole session; the client's default otherwise. */
  timeoutMs?: number;
}

const ISOLATION: Record<NonNullable<SessionOptions["isolation"]>, IsolationLevel> = {
  read_uncommitted: IsolationLevel.READ_UNCOMMITTED,
  read_committed: IsolationLevel.READ_COMMITTED,
  repeatable_read: IsolationLevel.REPEATABLE_READ,
  serializable: IsolationLevel.SERIALIZABLE,
};

/** A connection to sqlgate; share one per process. */
export class Client {
  private readonly query: RpcClient<typeof Query>;
  private readonly sessions: RpcClient<typeof Sessions>;
  private readonly timeoutMs: number;
  private readonly headers: Record<string, string>;
  private readonly transport: Transport;
  private readonly connection: Http2SessionManager | undefined;

  constructor(options: ClientOptions = {}) {
    const baseUrl = options.baseUrl ?? "http://127.0.0.1:50051";
    // One HTTP/2 connection, pinged so that a dead server is noticed.
    this.connection = options.transport ? undefined : new Http2SessionManager(baseUrl, { pingIntervalMs: 30_000 }, options.tls);
    const transport = options.transport ?? createGrpcTransport({ baseUrl, sessionManager: this.connection });
    this.query = createClient(Query, transport);
    this.sessions = createClient(Sessions, transport);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.headers = options.headers ?? {};
    this.transport = transport;
  }

  /** Closes the connection (calls in flight fail with CANCELED). */
  close(): void {
    this.connection?.abort();
  }

  /** The same client with another default deadline (ms), on the same connection. */
  withTimeout(timeoutMs: number): Client {
    return new Client({ transport: this.transport, timeoutMs, headers: this.headers });
  }

  /** Runs one statement (in its own transaction when it writes). */
  async execute(sql: string, ...params: SqlValue[]): Promise<Result> {
    const request = { sql, params: toValues(params) };
    try {
      return fromResponse(await this.query.execute(request, this.callOptions()));
    } catch (error) {
      throw SqlgateError.from(error);
    }
  }

  /** Runs one statement and yields its rows as they come; leaving the loop
   * early cancels the statement on the database. */
  async *stream(sql: string, ...params: SqlValue[]): AsyncGenerator<SqlValue[], void, undefined> {
    const request = { sql, params: toValues(params) };
    // The deadline is kept here rather than by Connect, whose timer outlives
    // a stream left early and would hold the process open until it fires.
    const abort = new AbortController();
    const timer = setTimeout(
      () => abort.abort(new ConnectError("the stream's deadline passed", Code.DeadlineExceeded)),
      this.timeoutMs,
    );
    const headers = { ...this.headers, "grpc-timeout": grpcTimeout(this.timeoutMs) };
    try {
      for await (const frame of this.query.executeStream(request, { headers, signal: abort.signal })) {
        if (frame.frame.case === "rows") {
          for (const row of frame.frame.value.rows) yield rowValues(row);
        }
      }
    } catch (error) {
      throw SqlgateError.from(error);
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  /** Runs statements in one transaction: all commit or none do. */
  async batch(statements: Iterable<Statement>): Promise<Result[]> {
    const request = {
      statements: Array.from(statements, (statement, index) => {
        const { sql, params = [] } = typeof statement === "string" ? { sql: statement } : statement;
        try {
          return { sql, params: toValues(params) };
        } catch (error) {
          const message = `statement ${index + 1}: ${(error as Error).message}`;
          throw error instanceof RangeError ? new RangeError(message) : new TypeError(message);
        }
      }),
    };
    try {
      return (await this.query.executeBatch(request, this.callOptions())).results.map(fromResponse);
    } catch (error) {
      throw SqlgateError.from(error);
    }
  }

  /** Runs one statement with many parameter sets, in one transaction. */
  executeMany(sql: string, paramSets: Iterable<SqlValue[]>): Promise<Result[]> {
    return this.batch(Array.from(paramSets, (params) => ({ sql, params })));
  }

  /** Opens a session (a server-side transaction): `await using tx = await
   * client.session()`; it rolls back when disposed without `commit()`. */
  async session(options: SessionOptions = {}): Promise<Session> {
    if (options.isolation !== undefined && !(options.isolation in ISOLATION)) {
      throw new RangeError(`unknown isolation ${String(options.isolation)}`);
    }
    const begin = create(SessionRequestSchema, {
      request: {
        case: "begin",
        value: {
          isolation: options.isolation ? ISOLATION[options.isolation] : IsolationLevel.UNSPECIFIED,
          readOnly: options.readOnly ?? false,
          labels: options.labels ?? {},
          idleTimeout: options.idleTimeoutMs === undefined ? undefined : durationFromMs(options.idleTimeoutMs),
        },
      },
    });
    const session = new Session(this.sessions, options.timeoutMs ?? this.timeoutMs, this.headers);
    await session.begin(begin);
    return session;
  }

  /** Runs `work` in a session: commits when it resolves, rolls back when it
   * throws; the stream is closed either way. */
  async transaction<T>(work: (tx: Session) => Promise<T>, options: SessionOptions = {}): Promise<T> {
    const tx = await this.session(options);
    try {
      const outcome = await work(tx);
      if (!tx.ended) await tx.commit();
      return outcome;
    } finally {
      await tx[Symbol.asyncDispose]();
    }
  }

  private callOptions() {
    return { timeoutMs: this.timeoutMs, headers: this.headers };
  }
}

/** One transaction bound to one `Attach` stream. */
export class Session implements AsyncDisposable {
  /** The id sqlgate gave the session (see Admin.ListSessions). */
  sessionId = "";
  private readonly requests = new RequestQueue<SessionRequest>();
  private readonly abort = new AbortController();
  private answers: AsyncIterator<SessionResponse> | undefined;
  private nextId = 0n;
  private done = false;
  private deadline: NodeJS.Timeout | undefined;
  private turns: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly client: RpcClient<typeof Sessions>,
    private readonly timeoutMs: number,
    private readonly headers: Record<string, string>,
  ) {}

  /** Whether the session is over (committed, rolled back, or failed). */
  get ended(): boolean {
    return this.done;
  }

  /** @internal Sends `begin` and reads `began`. */
  async begin(request: SessionRequest): Promise<void> {
    // The deadline is kept here, as for streams (see Client.stream).
    this.deadline = setTimeout(
      () => this.abort.abort(new ConnectError("the session's deadline passed", Code.DeadlineExceeded)),
      this.timeoutMs,
    );
    const headers = { ...this.headers, "grpc-timeout": grpcTimeout(this.timeoutMs) };
    this.answers = this.client.attach(this.requests, { headers, signal: this.abort.signal })[Symbol.asyncIterator]();
    this.requests.push(request);
    try {
      const answer = await this.read();
      if (answer.response.case === "error") throw SqlgateError.fromStatus(answer.response.value);
      if (answer.response.case !== "began") throw protocol(`expected began, got ${answer.response.case}`);
      this.sessionId = answer.response.value.sessionId;
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /** Runs one statement inside the session (bounded by sqlgate's session statement timeout; see executeWith). */
  async execute(sql: string, ...params: SqlValue[]): Promise<Result> {
    return this.executeWith({ sql, params });
  }

  /** Like execute, with a statement timeout of its own. Requests sent
   * together run one after the other, in the order they were called. */
  executeWith(statement: { sql: string; params?: SqlValue[]; timeoutMs?: number }): Promise<Result> {
    return this.inTurn(() => this.run(statement));
  }

  private async run(statement: { sql: string; params?: SqlValue[]; timeoutMs?: number }): Promise<Result> {
    this.checkOpen();
    const requestId = ++this.nextId;
    this.requests.push(
      create(SessionRequestSchema, {
        request: {
          case: "execute",
          value: {
            requestId,
            sql: statement.sql,
            params: toValues(statement.params ?? []),
            timeout: statement.timeoutMs === undefined ? undefined : durationFromMs(statement.timeoutMs),
          },
        },
      }),
    );
    const result = emptyResult();
    for (;;) {
      const answer = await this.read();
      const response = answer.response;
      if (response.case === "committed" || response.case === "rolledBack") {
        this.done = true;
        throw (await this.finalStatus()) ?? new SqlgateError(Code.Aborted, `the session ended during request ${requestId}`);
      }
      if (answer.requestId !== requestId) throw protocol(`answer for request ${answer.requestId} while waiting for ${requestId}`);
      switch (response.case) {
        case "frame":
          addFrame(result, response.value);
          break;
        case "done":
          return result;
        case "error":
          throw SqlgateError.fromStatus(response.value);
        default:
          throw protocol(`unexpected ${response.case}`);
      }
    }
  }

  /** Commits and ends the session (after the requests sent before it). */
  commit(): Promise<void> {
    return this.inTurn(async () => {
      this.checkOpen();
      await this.end("commit");
    });
  }

  /** Rolls back and ends the session (after the requests sent before it). */
  rollback(): Promise<void> {
    return this.inTurn(async () => {
      if (this.done) return this.close();
      await this.end("rollback");
    });
  }

  /** Runs `step` once every step called before it has settled: the answers
   * of one request must be read before the next is sent. */
  private inTurn<T>(step: () => Promise<T>): Promise<T> {
    const turn = this.turns.then(step);
    this.turns = turn.catch(() => undefined);
    return turn;
  }

  /** Rolls back unless committed, and always closes the stream. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      if (!this.done) await this.rollback();
    } catch {
      // The stream is closed below anyway; sqlgate rolls back a dropped session.
    } finally {
      this.close();
    }
  }

  private async end(how: "commit" | "rollback"): Promise<void> {
    const expected = how === "commit" ? "committed" : "rolledBack";
    this.requests.push(create(SessionRequestSchema, { request: { case: how, value: {} } }));
    try {
      const answer = await this.read();
      this.done = true;
      if (answer.response.case === "error") throw SqlgateError.fromStatus(answer.response.value);
      if (answer.response.case !== expected) throw protocol(`expected ${expected}, got ${answer.response.case}`);
      // The server then ends the stream with OK.
      await this.answers?.next();
    } finally {
      this.close();
    }
  }

  private close(): void {
    clearTimeout(this.deadline);
    this.requests.end();
    if (!this.done) {
      this.done = true;
      this.abort.abort();
    }
  }

  private async read(): Promise<SessionResponse> {
    let next: IteratorResult<SessionResponse>;
    try {
      next = await this.answers!.next();
    } catch (error) {
      this.done = true;
      this.requests.end();
      throw SqlgateError.from(error);
    }
    if (next.done) {
      this.done = true;
      throw new SqlgateError(Code.Unknown, "the session stream ended without a status");
    }
    return next.value;
  }

  private async finalStatus(): Promise<SqlgateError | undefined> {
    try {
      await this.answers?.next();
      return undefined;
    } catch (error) {
      return SqlgateError.from(error);
    } finally {
      this.close();
    }
  }

  private checkOpen(): void {
    if (this.done) throw new SqlgateError(Code.FailedPrecondition, "the session has ended");
  }
}

/** A `grpc-timeout` header value: at most eight digits, so long deadlines go in seconds. */
function grpcTimeout(ms: number): string {
  const whole = Math.max(1, Math.ceil(ms));
  return whole <= 99_999_999 ? `${whole}m` : `${Math.min(99_999_999, Math.ceil(whole / 1000))}S`;
}

function protocol(message: string): SqlgateError {
  return new SqlgateError(Code.Internal, `session protocol: ${message}`);
}

/** An async iterable the session pushes its requests into. */
class RequestQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: ((result: IteratorResult<T>) => void) | undefined;
  private closed = false;

  push(item: T): void {
    if (this.closed) return;
    if (this.waiting) {
      const wake = this.waiting;
      this.waiting = undefined;
      wake({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  end(): void {
    this.closed = true;
    if (this.waiting) {
      const wake = this.waiting;
      this.waiting = undefined;
      wake({ value: undefined, done: true });
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for (;;) {
      const item = this.items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.closed) return;
      const next = await new Promise<IteratorResult<T>>((resolve) => (this.waiting = resolve));
      if (next.done) return;
      yield next.value;
    }
  }
}
