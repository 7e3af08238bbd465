fn main() -> std::process::ExitCode {
    grexal_sidecar::cli::main()
}
