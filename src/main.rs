fn main() -> std::process::ExitCode {
    pia_split_tunnel_exporter::cli::main()
}
