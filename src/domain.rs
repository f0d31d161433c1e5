//! Domain types that enter at the edges (database rows, JSON, config,
//! headers) and are parsed once there, with an error instead of a default:
//! a team role, a team's limit enforcement, a key's billing choice, a
//! ledger row's status and usage source, and the request id.

use std::fmt;

/// A text that is not one of a type's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a valid {what}")]
pub struct ParseError {
    pub what: &'static str,
    pub text: String,
}

impl ParseError {
    fn new(what: &'static str, text: &str) -> ParseError {
        ParseError {
            what,
            text: text.chars().take(64).collect(),
        }
    }
}

/// Declares a text-backed enum: `parse`, `as_str`, `Display`, serde as its
/// text, and comparison with `&str` (so rows read like their stored text).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub fn parse(text: &str) -> Result<$name, ParseError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseError::new($what, text)),
                }
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_enum!(
    /// A member's role in a team, ordered by rights: `Member < Admin < Owner`.
    Role, "role", {
        Member => "member",
        Admin => "admin",
        Owner => "owner",
    }
);

text_enum!(
    /// How a team's monthly limits act.
    Enforcement, "enforcement", {
        /// Refuse a request that would pass the limit (402).
        Hard => "hard",
        /// Serve, warn in a header, record the crossing once a month.
        Soft => "soft",
    }
);

text_enum!(
    /// How a ledger row's request ended.
    Status, "row status", {
        /// The upstream answered 2xx and the response was delivered.
        Ok => "ok",
        /// The upstream answered an error status, or failed mid-stream.
        UpstreamError => "upstream_error",
        /// The upstream could not be reached or timed out.
        Failed => "failed",
        /// The client went away before the response was complete.
        ClientClosed => "client_closed",
        /// The gateway refused the request before forwarding it.
        Refused => "refused",
    }
);

text_enum!(
    /// Where a ledger row's token counts come from.
    Source, "usage source", {
        /// No usage: nothing was generated (refusals, errors).
        None => "none",
        /// The upstream reported it.
        Exact => "exact",
        /// The upstream completed without reporting it: counted by Tollgate.
        Estimated => "estimated",
        /// The response broke off: what was generated so far, partly estimated.
        Partial => "partial",
        /// Usage history brought in by `tollgate usage import`: in reports
        /// and month spend, never in a balance.
        Imported => "imported",
    }
);

text_enum!(
    /// The service tier an upstream reports it served a request at (OpenAI
    /// `service_tier`, Anthropic `usage.service_tier`). A tier with its own
    /// prices is priced at them (`[models.service_tiers.<tier>]`).
    ServiceTier, "service tier", {
        /// The provider's default (OpenAI `default`/`auto`, Anthropic `standard`).
        Standard => "standard",
        Priority => "priority",
        Flex => "flex",
        Scale => "scale",
        Batch => "batch",
    }
);

impl ServiceTier {
    /// Every tier, in index order.
    pub const ALL: [ServiceTier; 5] = [
        ServiceTier::Standard,
        ServiceTier::Priority,
        ServiceTier::Flex,
        ServiceTier::Scale,
        ServiceTier::Batch,
    ];

    /// The tier an upstream names: unknown names (and OpenAI's `default`
    /// and `auto`) are the standard tier.
    pub fn from_upstream(text: &str) -> ServiceTier {
        ServiceTier::parse(text).unwrap_or(ServiceTier::Standard)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

// Not derivable: the enum is declared by `text_enum!`.
#[allow(clippy::derivable_impls)]
impl Default for ServiceTier {
    fn default() -> Self {
        ServiceTier::Standard
    }
}

/// A name from a client, made fit for a row or a log line: control
/// characters (NUL included) dropped, at most `max_bytes` bytes (whole
/// characters).
pub fn clean_label(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    out
}

/// Longest team id accepted from a client (the gateway's own are 25).
pub const MAX_TEAM_ID_BYTES: usize = 64;

/// Whether a client's text has the shape of a team id (letters, digits,
/// `_` and `-`, at most [`MAX_TEAM_ID_BYTES`]), checked before any lookup.
pub fn is_team_id_shaped(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_TEAM_ID_BYTES
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Who pays for a key's requests unless a request says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BillingChoice {
    /// The key owner's own balance.
    Personal,
    /// A team the key owner belongs to (paid by the team's owner).
    Team(String),
}

impl BillingChoice {
    /// `personal` or `team:<id>` (surrounding spaces ignored).
    pub fn parse(text: &str) -> Result<BillingChoice, ParseError> {
        match text.trim() {
            "personal" => Ok(BillingChoice::Personal),
            other => match other.strip_prefix("team:") {
                Some(team) if is_team_id_shaped(team) => Ok(BillingChoice::Team(team.to_string())),
                _ => Err(ParseError::new("billing choice", text)),
            },
        }
    }
}

impl fmt::Display for BillingChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BillingChoice::Personal => f.write_str("personal"),
            BillingChoice::Team(team) => write!(f, "team:{team}"),
        }
    }
}

impl serde::Serialize for BillingChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A request's id (`req_…`, see [`crate::keys::new_request_id`]): in the
/// ledger, in `x-request-id`, in every log line of the request.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    pub fn new() -> RequestId {
        RequestId(crate::keys::new_request_id())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for RequestId {
    fn from(id: String) -> RequestId {
        RequestId(id)
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for RequestId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_round_trip_and_unknown_ones_are_errors() {
        for role in [Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::Member < Role::Admin && Role::Admin < Role::Owner);
        assert!(Role::parse("superuser").is_err());
        assert_eq!(Enforcement::parse("soft"), Ok(Enforcement::Soft));
        assert!(Enforcement::parse("").is_err());
        assert_eq!(Status::parse("client_closed"), Ok(Status::ClientClosed));
        assert!(Status::parse("fine").is_err());
        assert_eq!(
            serde_json::to_string(&Source::Partial).ok().as_deref(),
            Some("\"partial\"")
        );
        assert!(serde_json::from_str::<Status>("\"nope\"").is_err());
        assert_eq!(
            BillingChoice::parse(" team:t1 "),
            Ok(BillingChoice::Team("t1".into()))
        );
        assert_eq!(BillingChoice::Team("t1".into()).to_string(), "team:t1");
        assert!(BillingChoice::parse("team:").is_err());
        assert!(BillingChoice::parse("company").is_err());
    }
}
