//! Learning about new versions: the poll schedule with bounded concurrency,
//! and webhooks (signature check, payload parsing, routing). A webhook never
//! carries a version; it only asks for a poll.

/// Bitbucket Cloud webhooks: signature and payload.
pub mod bitbucket;
/// What every forge's webhook shares: the request's headers, verification,
/// events, delivery ids and routing to recipes, dispatched per [`Forge`].
pub mod forge;
/// Gitea, Forgejo and Gogs webhooks: signature and payload.
pub mod gitea;
/// GitHub webhooks: signature and payload.
pub mod github;
/// GitLab webhooks: signing token (Standard Webhooks) or secret token, payload.
pub mod gitlab;
/// Per-recipe poll schedule with bounded concurrency.
pub mod poll;
/// Repository URLs reduced to one comparable form.
pub mod url;

/// The forge a webhook comes from: its endpoint and the `forge` label of
/// `farmhand_webhooks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Forge {
    /// Bitbucket Cloud, `POST /webhooks/bitbucket`.
    Bitbucket,
    /// Gitea, Forgejo and Gogs, `POST /webhooks/gitea`.
    Gitea,
    /// GitHub, `POST /webhooks/github`.
    Github,
    /// GitLab, `POST /webhooks/gitlab`.
    Gitlab,
}

impl Forge {
    /// Every forge, in label order.
    pub const ALL: [Forge; 4] = [Forge::Bitbucket, Forge::Gitea, Forge::Github, Forge::Gitlab];

    /// The label value and the last part of the endpoint's path.
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitlab => "gitlab",
            Forge::Gitea => "gitea",
            Forge::Bitbucket => "bitbucket",
        }
    }

    /// The forge whose endpoint is `path` (`/webhooks/<forge>`).
    pub fn from_path(path: &str) -> Option<Forge> {
        let name = path.strip_prefix("/webhooks/")?;
        Forge::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl std::fmt::Display for Forge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
