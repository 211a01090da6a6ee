//! A recipe's `[[package]]` stanzas: which DESTDIR files go into which
//! package.

/// One `[[package]]` stanza of a recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageSpec {
    /// Package name; becomes part of the artifact's file name.
    pub name: String,
    /// Architecture; becomes part of the artifact's file name.
    pub architecture: String,
    /// Free-text description copied to the index.
    pub description: String,
    /// Globs relative to DESTDIR (`*` stays within a directory, `**` crosses
    /// directories).
    pub files: Vec<String>,
}
