//! Prints every kubekms CRD as one YAML stream:
//! `cargo run -p kubekms-crds --bin crdgen > crds/kubekms.io.yaml`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match kubekms_crds::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRDs: {e}");
            ExitCode::FAILURE
        }
    }
}
