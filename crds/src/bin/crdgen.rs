//! Writes the CRD manifests generated from the Rust types into a folder (default `crds/manifests`), and the
//! chart's admission policies rendered for the default namespace into `crds/admission-policies.yaml`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests"));
    for crd in saaschat_crds::crds() {
        let path = dir.join(saaschat_crds::manifest_file_name(&crd));
        let written = saaschat_crds::manifest_yaml(&crd)
            .map_err(|e| e.to_string())
            .and_then(|yaml| std::fs::write(&path, yaml).map_err(|e| e.to_string()));
        if let Err(error) = written {
            eprintln!("crdgen: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(saaschat_crds::ADMISSION_POLICIES_FILE);
    if let Err(error) = std::fs::write(&policies, saaschat_crds::default_admission_policies()) {
        eprintln!("crdgen: cannot write {}: {error}", policies.display());
        return ExitCode::FAILURE;
    }
    println!("{}", policies.display());
    ExitCode::SUCCESS
}
