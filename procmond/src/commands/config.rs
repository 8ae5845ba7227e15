//! `procmond config validate FILE`.

use std::path::Path;

use anyhow::Result;
use procmond::config::{ConfigKind, validate_file};

pub fn validate(file: &Path) -> Result<()> {
    let kind = validate_file(file)?;
    let kind = match kind {
        ConfigKind::Procmond => "procmond.yaml",
        ConfigKind::Agent => "agent.yaml",
    };
    println!("{}: valid {kind}", file.display());
    Ok(())
}
