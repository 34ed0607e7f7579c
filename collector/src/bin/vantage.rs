//! `vantage`: the command-line client of the query API.

fn main() {
    std::process::exit(vantage_collector::cli::main());
}
