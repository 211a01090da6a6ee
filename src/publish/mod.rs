//! The package repository: the index held in memory, atomic publish,
//! signing, and the upload of the published tree; and notifications out.

/// Notifications out: `[[notify]]` delivery in the background.
pub mod notify;
/// The peipkg backend's publishing: peipkg-repo init/publish, its archive.
pub mod peipkg;
/// Repository state: index in memory, atomic publish, signing.
pub mod repo;
/// rclone / command upload.
pub mod upload;
