#!/usr/bin/env bash
# Generates the Java stubs from proto/ (Debian's protoc 3.21 and
# grpc_java_plugin 1.41), compiles Example.java against Debian's jars and runs
# it against the sqlgate at $1 (host:port).
# Needs: apt-get install default-jdk-headless protobuf-compiler libprotobuf-java
#        libgrpc-java protobuf-compiler-grpc-java-plugin libnetty-java libguava-java
#        libgeronimo-annotation-1.3-spec-java libperfmark-java
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/src" "$out/classes"
protoc -I "$repo/proto" --java_out="$out/src" \
    --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin --grpc-java_out="$out/src" \
    "$repo"/proto/sqlgate/v1/*.proto "$repo"/proto/google/rpc/*.proto
jars=(protobuf guava failureaccess grpc-api grpc-context grpc-core grpc-stub grpc-protobuf
      grpc-protobuf-lite grpc-netty netty-buffer netty-codec netty-codec-http netty-codec-http2
      netty-common netty-handler netty-resolver netty-transport perfmark-api opencensus-api
      error_prone_annotations jsr305 geronimo-annotation-1.3-spec)
classpath=""
for jar in "${jars[@]}"; do
    [ -f "/usr/share/java/$jar.jar" ] && classpath="$classpath:/usr/share/java/$jar.jar"
done
classpath=${classpath#:}
javac -nowarn -d "$out/classes" -cp "$classpath" $(find "$out/src" -name '*.java') "$here/Example.java"
java -cp "$out/classes:$classpath" Example "$1"
