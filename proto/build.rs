//! Compiles the OpAMP messages (`opamp/*.proto`) with a vendored protoc, so a
//! fresh machine needs no protobuf-compiler package. Messages only: OpAMP has
//! no gRPC service, its transports are plain HTTP and WebSocket.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    prost_build::Config::new()
        .protoc_executable(protoc)
        .compile_protos(&["opamp/opamp.proto"], &["opamp"])?;
    println!("cargo:rerun-if-changed=opamp");
    Ok(())
}
