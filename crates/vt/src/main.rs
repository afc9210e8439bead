//! The `vt` binary: build the runtime, run the CLI, exit with its code.

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(vt_cli::ExitStatus::Failure.code());
        }
    };
    let status = runtime.block_on(vt_cli::run(std::env::args_os()));
    // Do not wait for background tasks (an open event stream, the projector).
    runtime.shutdown_background();
    std::process::exit(status.code());
}
