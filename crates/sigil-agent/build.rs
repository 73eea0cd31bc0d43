//! Compiles `proto/workloadapi.proto` with protox (a pure-Rust protobuf compiler; protoc is not
//! needed) and generates the tonic server and client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workloadapi.proto");
    let fds = protox::compile(["workloadapi.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
