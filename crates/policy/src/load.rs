//! Loading a bundle from policy files and a catalog file, as every front end does.

use crate::{build_bundle, Bundle, Catalog, CatalogError, Report, Source};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The rendered diagnostics of a bundle with errors.
    #[error("{rendered}")]
    Invalid { rendered: String, errors: usize },
}

/// A compiled bundle with its sources and any warnings.
pub struct Loaded {
    pub bundle: Bundle,
    pub sources: Vec<Source>,
    pub warnings: Report,
}

impl Loaded {
    pub fn render_warnings(&self) -> String {
        self.warnings.render(&self.sources)
    }

    /// Each policy source's name and size, for the `policy_activation` record.
    pub fn source_sizes(&self) -> Vec<(String, usize)> {
        self.sources
            .iter()
            .map(|s| (s.name.to_string(), s.text.len()))
            .collect()
    }
}

/// Reads a text file with a precise error.
pub fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads policy files (each may hold many policies) and an optional catalog, and compiles them.
pub fn load_files(policies: &[PathBuf], catalog: Option<&Path>) -> Result<Loaded, LoadError> {
    let sources = policies
        .iter()
        .map(|p| Ok(Source::new(p.display().to_string(), read(p)?)))
        .collect::<Result<Vec<_>, LoadError>>()?;
    let (catalog, catalog_text) = match catalog {
        Some(path) => {
            let text = read(path)?;
            (
                Catalog::from_toml(&path.display().to_string(), &text)?,
                text,
            )
        }
        None => (Catalog::default(), String::new()),
    };
    load_sources(sources, catalog, &catalog_text)
}

/// Compiles in-memory sources against a parsed catalog.
pub fn load_sources(
    sources: Vec<Source>,
    catalog: Catalog,
    catalog_text: &str,
) -> Result<Loaded, LoadError> {
    match build_bundle(&sources, catalog, catalog_text) {
        Ok((bundle, warnings)) => Ok(Loaded {
            bundle,
            sources,
            warnings,
        }),
        Err(report) => Err(LoadError::Invalid {
            rendered: report.render(&sources),
            errors: report
                .diagnostics
                .iter()
                .filter(|(_, d)| d.is_error())
                .count(),
        }),
    }
}
