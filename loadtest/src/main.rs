//! `tgingest-loadtest`: runs load scenarios against a local tgingest (issue 6 fills this in).

fn main() {
    eprintln!(
        "tgingest-loadtest {}: no scenarios yet; the loadtest arrives with the pipeline",
        tgingest::VERSION
    );
    std::process::exit(2);
}
