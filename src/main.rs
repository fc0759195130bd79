// jemalloc: glibc malloc's arena locks and consolidation took ~30% of the node's CPU under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Before anything holds a secret: no core file, no ptrace or /proc reads by the same user.
    if let Err(e) = tgingest::telemetry::make_non_dumpable() {
        eprintln!(
            "warning: cannot make the process non-dumpable ({e}); a crash may write keys into a core file"
        );
    }
    tgingest::cli::main()
}
