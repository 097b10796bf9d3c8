//! Compiles the wire contract in `proto/` with protox (no system `protoc`),
//! generates the tonic services, and writes the encoded descriptor set that
//! the reflection service serves (tonic-prost-build's
//! `file_descriptor_set_path` does nothing on the protox path).

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/sqlgate/v1/value.proto",
    "proto/sqlgate/v1/query.proto",
    "proto/sqlgate/v1/session.proto",
    "proto/sqlgate/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    let descriptor_set = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("sqlgate_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".google.rpc", "::tonic_types::pb")
        // Encoded straight from sqlgate's values; see src/grpc/row_batch.rs.
        .extern_path(".sqlgate.v1.RowBatch", "crate::grpc::pb::RowBatch")
        // A request that does not decode is INVALID_ARGUMENT; see src/grpc/codec.rs.
        .codec_path("crate::grpc::codec::StrictCodec")
        .compile_fds(descriptor_set)?;
    Ok(())
}
