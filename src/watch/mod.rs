//! Learning about new versions: the poll schedule with bounded concurrency,
//! and webhooks (signature check, payload parsing, routing). A webhook never
//! carries a version; it only asks for a poll.

/// GitHub webhooks: signature, payload, routing.
pub mod github;
/// Per-recipe poll schedule with bounded concurrency.
pub mod poll;

/// What became of one webhook request: the `result` label of
/// `farmhand_webhooks_total`. A closed set, so no typo can start a new
/// series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WebhookResult {
    /// Signed, for a watched upstream: a poll was triggered.
    Accepted,
    /// A ping.
    Pong,
    /// Signed, but no recipe takes webhooks for that upstream (or not this event).
    NotWatched,
    /// Missing or wrong signature.
    InvalidSignature,
    /// Not JSON, or a payload without what the event needs.
    BadRequest,
    /// Over the body limit.
    TooLarge,
    /// A delivery id already acted on.
    Duplicate,
}

impl WebhookResult {
    /// Every result, in label order.
    pub const ALL: [WebhookResult; 7] = [
        WebhookResult::Accepted,
        WebhookResult::Pong,
        WebhookResult::NotWatched,
        WebhookResult::InvalidSignature,
        WebhookResult::BadRequest,
        WebhookResult::TooLarge,
        WebhookResult::Duplicate,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Pong => "pong",
            WebhookResult::NotWatched => "not_watched",
            WebhookResult::InvalidSignature => "invalid_signature",
            WebhookResult::BadRequest => "bad_request",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::Duplicate => "duplicate",
        }
    }
}
