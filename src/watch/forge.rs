//! What the webhook endpoints of every forge share, dispatched per
//! [`Forge`]: which headers a request is read from, its verification, its
//! event and delivery id, its payload's repository URLs, and the routing
//! of those URLs to the recipes that take webhooks.
//!
//! | forge | authenticity | tag events | URLs | delivery id |
//! |---|---|---|---|---|
//! | GitHub | `X-Hub-Signature-256` | `push`, `create` (`ping`) | `repository.{clone_url,html_url,ssh_url,git_url}` | `X-GitHub-Delivery` |
//! | Gitea, Forgejo, Gogs | `X-Forgejo-Signature`, `X-Gitea-Signature`, `X-Gogs-Signature` | `push`, `create` | `repository.{clone_url,html_url,ssh_url}` | `X-Forgejo-Delivery`, `X-Gitea-Delivery`, `X-Gogs-Delivery` |
//! | GitLab | `webhook-signature`, else `X-Gitlab-Token` | `Tag Push Hook`, `Push Hook` | `project.{git_http_url,git_ssh_url,web_url}` | `Idempotency-Key`, else `X-Gitlab-Event-UUID` |
//! | Bitbucket | `X-Hub-Signature` | `repo:push` (`diagnostics:ping`) | `repository.links.html.href` | `X-Request-UUID` |

use std::time::SystemTime;

use crate::model::recipe::Roster;
use crate::watch::url::{json_object, normalize_url, PayloadRepo};
use crate::watch::{bitbucket, gitea, github, gitlab, Forge};

/// The header names a forge's requests are read from, lowercase, in the
/// order they are preferred.
struct Spec {
    signature: &'static [&'static str],
    event: &'static [&'static str],
    delivery: &'static [&'static str],
    pings: &'static [&'static str],
    tag_events: &'static [&'static str],
    /// The answer to a request without a valid signature.
    unsigned: &'static str,
}

const GITHUB: Spec = Spec {
    signature: &["x-hub-signature-256"],
    event: &["x-github-event"],
    delivery: &["x-github-delivery"],
    pings: &["ping"],
    tag_events: &["push", "create"],
    unsigned: "invalid or missing X-Hub-Signature-256",
};

const GITEA: Spec = Spec {
    signature: &[
        "x-forgejo-signature",
        "x-gitea-signature",
        "x-gogs-signature",
    ],
    event: &["x-forgejo-event", "x-gitea-event", "x-gogs-event"],
    delivery: &["x-forgejo-delivery", "x-gitea-delivery", "x-gogs-delivery"],
    pings: &[],
    tag_events: &["push", "create"],
    unsigned: "invalid or missing X-Gitea-Signature (or X-Forgejo-Signature, X-Gogs-Signature)",
};

const GITLAB: Spec = Spec {
    signature: &[
        "webhook-signature",
        "webhook-id",
        "webhook-timestamp",
        "x-gitlab-token",
    ],
    event: &["x-gitlab-event"],
    delivery: &["idempotency-key", "x-gitlab-event-uuid"],
    pings: &[],
    tag_events: &["Tag Push Hook", "Push Hook"],
    unsigned: "invalid or missing X-Gitlab-Token (or webhook-signature)",
};

const BITBUCKET: Spec = Spec {
    signature: &["x-hub-signature"],
    event: &["x-event-key"],
    delivery: &["x-request-uuid"],
    pings: &["diagnostics:ping"],
    tag_events: &["repo:push"],
    unsigned: "invalid or missing X-Hub-Signature",
};

fn spec(forge: Forge) -> &'static Spec {
    match forge {
        Forge::Github => &GITHUB,
        Forge::Gitea => &GITEA,
        Forge::Gitlab => &GITLAB,
        Forge::Bitbucket => &BITBUCKET,
    }
}

/// What a webhook's event header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A ping (GitHub's `ping`, Bitbucket's `diagnostics:ping`).
    Ping,
    /// An event that may carry new tags: poll the repository.
    Tags(String),
    /// Any other event: answered 200 and not acted on.
    Other(String),
    /// No readable event header.
    Missing,
}

/// The headers of one webhook request that its forge reads.
#[derive(Debug, Clone)]
pub struct Webhook {
    forge: Forge,
    headers: Vec<(&'static str, String)>,
}

impl Webhook {
    /// Reads the headers `forge` uses through `lookup` (given a lowercase
    /// name, the value if it is present and readable as text).
    pub fn new(forge: Forge, lookup: impl Fn(&str) -> Option<String>) -> Webhook {
        let s = spec(forge);
        let headers = [s.signature, s.event, s.delivery]
            .into_iter()
            .flatten()
            .filter_map(|name| lookup(name).map(|v| (*name, v)))
            .collect();
        Webhook { forge, headers }
    }

    /// The forge.
    pub fn forge(&self) -> Forge {
        self.forge
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn first(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.get(n))
    }

    /// True when any of the forge's signature or token headers is present.
    pub fn has_signature(&self) -> bool {
        self.first(spec(self.forge).signature).is_some()
    }

    /// Checks the request's authenticity over `body` with `secret`; the
    /// error is the answer to give (it names the headers, never a secret).
    pub fn verify(&self, secret: &[u8], body: &[u8], now: SystemTime) -> Result<(), &'static str> {
        let unsigned = spec(self.forge).unsigned;
        let ok = match self.forge {
            Forge::Github => {
                github::verify_signature(secret, body, self.get("x-hub-signature-256"))
            }
            Forge::Bitbucket => {
                bitbucket::verify_signature(secret, body, self.get("x-hub-signature"))
            }
            Forge::Gitea => gitea::verify_signature(secret, body, self.first(GITEA.signature)),
            Forge::Gitlab => {
                let auth = gitlab::Auth {
                    signature: self.get("webhook-signature"),
                    id: self.get("webhook-id"),
                    timestamp: self.get("webhook-timestamp"),
                    token: self.get("x-gitlab-token"),
                };
                return gitlab::verify(secret, body, &auth, now);
            }
        };
        if ok {
            Ok(())
        } else {
            Err(unsigned)
        }
    }

    /// The answer to a request that is not correctly signed.
    pub fn unsigned(&self) -> &'static str {
        spec(self.forge).unsigned
    }

    /// The delivery id, the same on the forge's redelivery of one event.
    pub fn delivery(&self) -> Option<&str> {
        spec(self.forge)
            .delivery
            .iter()
            .filter_map(|n| self.get(n))
            .find(|v| !v.is_empty())
    }

    /// The event the request carries.
    pub fn event(&self) -> Event {
        let s = spec(self.forge);
        match self.first(s.event) {
            None => Event::Missing,
            Some(e) if s.pings.contains(&e) => Event::Ping,
            Some(e) if s.tag_events.contains(&e) => Event::Tags(e.to_string()),
            Some(e) => Event::Other(e.to_string()),
        }
    }

    /// The header the event is read from, for messages.
    pub fn event_header(&self) -> &'static str {
        match self.forge {
            Forge::Github => "X-GitHub-Event",
            Forge::Gitea => "X-Gitea-Event",
            Forge::Gitlab => "X-Gitlab-Event",
            Forge::Bitbucket => "X-Event-Key",
        }
    }
}

/// The repository URLs of a payload from `forge`. The body must be a JSON
/// object (else an error starting `body is not`); a payload without URLs
/// is not an error, it matches no recipe.
pub fn parse_payload(forge: Forge, body: &[u8]) -> Result<PayloadRepo, String> {
    let obj = json_object(body)?;
    let urls = match forge {
        Forge::Github => github::urls(&obj),
        Forge::Gitea => gitea::urls(&obj),
        Forge::Gitlab => gitlab::urls(&obj),
        Forge::Bitbucket => bitbucket::urls(&obj),
    };
    Ok(PayloadRepo { urls })
}

/// All recipes a payload is about that take webhooks (several recipes may
/// package one upstream), and whether any recipe builds that upstream at
/// all.
pub fn route_all(roster: &Roster, payload: &PayloadRepo) -> (Vec<String>, bool) {
    let wanted: Vec<String> = payload.urls.iter().map(|u| normalize_url(u)).collect();
    let mut on = Vec::new();
    let mut any = false;
    for r in roster.recipes.values() {
        let Some(up) = r.upstream.as_ref() else {
            continue;
        };
        if wanted.contains(&normalize_url(&up.git)) {
            any = true;
            if r.watch.webhook {
                on.push(r.id.clone());
            }
        }
    }
    (on, any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hook(forge: Forge, headers: &[(&str, &str)]) -> Webhook {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        Webhook::new(forge, |n| map.get(n).cloned())
    }

    #[test]
    fn events_and_deliveries() {
        let h = hook(
            Forge::Gitea,
            &[
                ("X-Gitea-Event", "create"),
                ("X-Forgejo-Delivery", "f-1"),
                ("X-Gitea-Delivery", "g-1"),
            ],
        );
        assert_eq!(h.event(), Event::Tags("create".into()));
        assert_eq!(h.delivery(), Some("f-1"));
        let h = hook(Forge::Gitea, &[("X-Gogs-Event", "release")]);
        assert_eq!(h.event(), Event::Other("release".into()));
        assert_eq!(h.delivery(), None);
        let h = hook(
            Forge::Gitlab,
            &[
                ("X-Gitlab-Event", "Tag Push Hook"),
                ("Idempotency-Key", ""),
                ("X-Gitlab-Event-UUID", "u-1"),
            ],
        );
        assert_eq!(h.event(), Event::Tags("Tag Push Hook".into()));
        assert_eq!(h.delivery(), Some("u-1"));
        let h = hook(Forge::Gitlab, &[("X-Gitlab-Event", "Merge Request Hook")]);
        assert_eq!(h.event(), Event::Other("Merge Request Hook".into()));
        let h = hook(Forge::Bitbucket, &[("X-Event-Key", "diagnostics:ping")]);
        assert_eq!(h.event(), Event::Ping);
        let h = hook(
            Forge::Bitbucket,
            &[("X-Event-Key", "repo:push"), ("X-Request-UUID", "b-1")],
        );
        assert_eq!(h.event(), Event::Tags("repo:push".into()));
        assert_eq!(h.delivery(), Some("b-1"));
        assert_eq!(hook(Forge::Github, &[]).event(), Event::Missing);
        // Another forge's headers are not read.
        let h = hook(Forge::Github, &[("X-Gitea-Event", "push")]);
        assert_eq!(h.event(), Event::Missing);
    }

    #[test]
    fn verification_per_forge() {
        let body = br#"{"repository":{}}"#;
        let now = SystemTime::now();
        let hex = github::hmac_hex(b"k", body);
        let sha = format!("sha256={hex}");
        let ok = |f, h: &[(&str, &str)]| hook(f, h).verify(b"k", body, now).is_ok();
        assert!(ok(Forge::Github, &[("X-Hub-Signature-256", &sha)]));
        assert!(!ok(Forge::Github, &[("X-Hub-Signature", &sha)]));
        assert!(ok(Forge::Bitbucket, &[("X-Hub-Signature", &sha)]));
        assert!(!ok(Forge::Bitbucket, &[("X-Hub-Signature-256", &sha)]));
        for name in [
            "X-Forgejo-Signature",
            "X-Gitea-Signature",
            "X-Gogs-Signature",
        ] {
            assert!(ok(Forge::Gitea, &[(name, &hex)]), "{name}");
        }
        assert!(!ok(Forge::Gitea, &[("X-Gitea-Signature", &sha)]));
        assert!(ok(Forge::Gitlab, &[("X-Gitlab-Token", "k")]));
        let ts = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let sig = gitlab::sign(b"k", "id-1", &ts, body);
        assert!(ok(
            Forge::Gitlab,
            &[
                ("webhook-id", "id-1"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &sig)
            ]
        ));
        for f in Forge::ALL {
            let h = hook(f, &[]);
            assert!(!h.has_signature());
            assert!(h.verify(b"k", body, now).is_err());
        }
    }

    #[test]
    fn payload_urls_per_forge() {
        let body = br#"{
            "repository": {"clone_url": "a", "html_url": "b", "links": {"html": {"href": "c"}}},
            "project": {"git_http_url": "d", "web_url": "e"}
        }"#;
        let urls = |f| parse_payload(f, body).unwrap().urls;
        assert_eq!(urls(Forge::Github), ["b", "a"]);
        assert_eq!(urls(Forge::Gitea), ["a", "b"]);
        assert_eq!(urls(Forge::Gitlab), ["d", "e"]);
        assert_eq!(urls(Forge::Bitbucket), ["c"]);
        for f in Forge::ALL {
            assert!(parse_payload(f, b"[]").is_err());
            assert!(parse_payload(f, b"nope").is_err());
        }
    }
}
