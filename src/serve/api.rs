//! The documents of `/builds/{id}` and `/recipes/{id}`, and how a request
//! says which representation it wants: JSON, or (when `Accept` prefers
//! `text/html`) the console page made from the same document.

use hyper::header::HeaderValue;
use serde::Serialize;

use crate::model::recipe::Roster;
use crate::serve::status::{RecipeActivity, Status};

/// What a request for a document wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// JSON.
    Json,
    /// The console page.
    Html,
}

/// `Html` when the `Accept` header prefers `text/html` to JSON (as a
/// browser's does), else `Json`.
pub fn negotiate(accept: Option<&HeaderValue>) -> Representation {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return Representation::Json;
    };
    let (mut html, mut json) = (0.0f32, 0.0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|v| v.parse::<f32>().ok())
            .unwrap_or(1.0);
        match mime.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "application/json" => json = json.max(q),
            _ => {}
        }
    }
    if html > json {
        Representation::Html
    } else {
        Representation::Json
    }
}

/// `/recipes/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct RecipeDoc {
    /// The recipe id.
    pub id: String,
    /// The upstream git URL (null for a recipe without `[upstream]`).
    pub git: Option<String>,
    /// The tag pattern.
    pub tag_pattern: Option<String>,
    /// The poll interval in seconds.
    pub interval: Option<u64>,
    /// Whether it takes webhooks.
    pub webhook: bool,
    /// The lowest upstream version built.
    pub min_version: Option<String>,
    /// The package revision.
    pub revision: Option<u64>,
    /// Whether an operator paused it.
    pub paused: bool,
    /// Why its file is invalid (then the fields above are null); null
    /// when valid.
    pub invalid: Option<String>,
    /// Polls, published versions, backoff entries and builds.
    #[serde(flatten)]
    pub activity: RecipeActivity,
}

/// The document of recipe `id`, or `None` when the roster has no such
/// recipe (valid or invalid). `id` is only looked up, never used in a path.
pub fn recipe_doc(roster: &Roster, status: &Status, id: &str) -> Option<RecipeDoc> {
    let mut doc = RecipeDoc {
        id: id.to_string(),
        git: None,
        tag_pattern: None,
        interval: None,
        webhook: false,
        min_version: None,
        revision: None,
        paused: status.is_paused(id),
        invalid: None,
        activity: status.recipe_activity(id),
    };
    match (roster.recipes.get(id), roster.invalid.get(id)) {
        (Some(r), _) => {
            doc.interval = Some(r.watch.poll_interval.as_secs());
            doc.webhook = r.watch.webhook;
            if let Some(u) = &r.upstream {
                doc.git = Some(u.git.clone());
                doc.tag_pattern = Some(u.tag_pattern.as_str().to_string());
                doc.min_version = u.min_version.clone();
                doc.revision = Some(u.revision);
            }
        }
        (None, Some(e)) => doc.invalid = Some(e.clone()),
        (None, None) => return None,
    }
    Some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_only_when_preferred() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(negotiate(None), Representation::Json);
        assert_eq!(negotiate(Some(&h("*/*"))), Representation::Json);
        assert_eq!(
            negotiate(Some(&h("application/json"))),
            Representation::Json
        );
        assert_eq!(
            negotiate(Some(&h(
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            ))),
            Representation::Html
        );
        assert_eq!(
            negotiate(Some(&h("application/json, text/html;q=0.5"))),
            Representation::Json
        );
    }
}
