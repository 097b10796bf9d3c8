// Calling sqlgate from Java with Debian's grpc-java 1.41 and protobuf-java
// 3.21 jars (no Maven): one statement, a session that commits, and an
// error's google.rpc details. run.sh generates the stubs from proto/,
// compiles this file and runs it against a sqlgate address; it exits
// non-zero when anything differs from what is printed as expected.

import com.google.rpc.ErrorInfo;
import dev.sqlgate.v1.BeginSession;
import dev.sqlgate.v1.CommitSession;
import dev.sqlgate.v1.ExecuteRequest;
import dev.sqlgate.v1.ExecuteResponse;
import dev.sqlgate.v1.QueryGrpc;
import dev.sqlgate.v1.SessionExecute;
import dev.sqlgate.v1.SessionRequest;
import dev.sqlgate.v1.SessionResponse;
import dev.sqlgate.v1.SessionsGrpc;
import dev.sqlgate.v1.Value;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

public final class Example {
    public static void main(String[] args) throws Exception {
        ManagedChannel channel = ManagedChannelBuilder.forTarget(args[0]).usePlaintext().build();
        QueryGrpc.QueryBlockingStub query = QueryGrpc.newBlockingStub(channel);
        String table = "java_notes_" + System.nanoTime();

        run(query, "CREATE TABLE " + table + " (id int8 PRIMARY KEY, body text)");

        // A session: begin, one insert, commit; every execute ends with done or error.
        LinkedBlockingQueue<SessionResponse> answers = new LinkedBlockingQueue<>();
        StreamObserver<SessionRequest> requests = SessionsGrpc.newStub(channel)
                .withDeadlineAfter(30, TimeUnit.SECONDS)
                .attach(new StreamObserver<>() {
                    public void onNext(SessionResponse answer) { answers.add(answer); }
                    public void onError(Throwable error) { error.printStackTrace(); }
                    public void onCompleted() {}
                });
        requests.onNext(SessionRequest.newBuilder().setBegin(BeginSession.newBuilder().putLabels("client", "java")).build());
        expect(answers.poll(10, TimeUnit.SECONDS).hasBegan(), "began");
        requests.onNext(SessionRequest.newBuilder().setExecute(SessionExecute.newBuilder()
                .setRequestId(1)
                .setSql("INSERT INTO " + table + " VALUES ($1, $2)")
                .addParams(Value.newBuilder().setIntValue(Long.MAX_VALUE))
                .addParams(Value.newBuilder().setTextValue("from java"))).build());
        SessionResponse answer;
        do {
            answer = answers.poll(10, TimeUnit.SECONDS);
        } while (!answer.hasDone() && !answer.hasError());
        expect(answer.hasDone(), "insert done");
        requests.onNext(SessionRequest.newBuilder().setCommit(CommitSession.getDefaultInstance()).build());
        expect(answers.poll(10, TimeUnit.SECONDS).hasCommitted(), "committed");
        requests.onCompleted();

        ExecuteResponse rows = run(query, "SELECT id, body FROM " + table);
        expect(rows.getRows(0).getValues(0).getIntValue() == Long.MAX_VALUE, "int64 kept exactly");
        System.out.println("row: " + rows.getRows(0).getValues(0).getIntValue() + " " + rows.getRows(0).getValues(1).getTextValue());

        // An error's details: the duplicate key's SQLSTATE in ErrorInfo.
        try {
            query.withDeadlineAfter(10, TimeUnit.SECONDS).execute(ExecuteRequest.newBuilder()
                    .setSql("INSERT INTO " + table + " VALUES ($1, 'again')")
                    .addParams(Value.newBuilder().setIntValue(Long.MAX_VALUE)).build());
            throw new AssertionError("the duplicate was accepted");
        } catch (StatusRuntimeException error) {
            com.google.rpc.Status status = StatusProto.fromThrowable(error);
            ErrorInfo info = status.getDetails(0).unpack(ErrorInfo.class);
            System.out.println("error: " + error.getStatus().getCode() + " " + info.getReason() + " sqlstate=" + info.getMetadataMap().get("sqlstate"));
            expect(error.getStatus().getCode() == io.grpc.Status.Code.ALREADY_EXISTS, "ALREADY_EXISTS");
            expect("23505".equals(info.getMetadataMap().get("sqlstate")), "sqlstate 23505");
        }
        channel.shutdown().awaitTermination(5, TimeUnit.SECONDS);
        System.out.println("java example: ok");
    }

    private static ExecuteResponse run(QueryGrpc.QueryBlockingStub query, String sql) {
        return query.withDeadlineAfter(10, TimeUnit.SECONDS).execute(ExecuteRequest.newBuilder().setSql(sql).build());
    }

    private static void expect(boolean condition, String what) {
        if (!condition) throw new AssertionError("expected " + what);
    }
}
