//! Validated names that become MQTT topic levels.
//!
//! Every name that bonker splices into a topic — a Kubernetes namespace, a desk, a cluster, the topic
//! prefix — passes through one of these types first. Their constructors are the only way to build
//! them, so a value with `/`, `+`, `#`, NUL or whitespace can never publish outside its own topic or
//! into a wildcard: the type system carries the proof that the check was made.
//!
//! The rules are deliberately strict and each rejection names the rule it broke, because the people
//! reading the error are operators fixing a label or a config file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest Kubernetes namespace (a DNS label, RFC 1123).
pub const NAMESPACE_MAX_LEN: usize = 63;
/// The longest desk name. Desk names also become Home Assistant `node_id`s and MQTT client ids.
pub const DESK_MAX_LEN: usize = 64;
/// The longest cluster name.
pub const CLUSTER_MAX_LEN: usize = 64;
/// The longest topic prefix, all levels together.
pub const PREFIX_MAX_LEN: usize = 128;

/// What kind of name was being checked, so an error can say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A Kubernetes namespace.
    Namespace,
    /// A desk name.
    Desk,
    /// A cluster name.
    Cluster,
    /// A topic prefix (one or more levels).
    Prefix,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Namespace => "namespace",
            NameKind::Desk => "desk name",
            NameKind::Cluster => "cluster name",
            NameKind::Prefix => "topic prefix",
        })
    }
}

/// The rule a rejected name broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The name is empty (or, for a prefix, one of its levels is).
    Empty,
    /// The name is longer than the limit.
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// The name contains a character that is never allowed in a topic level.
    Forbidden {
        /// The offending character.
        character: char,
        /// Why it is forbidden.
        why: &'static str,
    },
    /// The name contains a character outside the allowed set for its kind.
    Charset {
        /// The offending character.
        character: char,
        /// The allowed set, in words.
        allowed: &'static str,
    },
    /// The name must start and end with a letter or digit (DNS label rule).
    Edges,
    /// A `+` wildcard that is not a whole level (only prefix filters may hold `+`, and only as a level).
    PartialWildcard,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Empty => f.write_str("it is empty"),
            Rule::TooLong { max } => write!(f, "it is longer than {max} bytes"),
            Rule::Forbidden { character, why } => {
                write!(f, "it contains {character:?}, {why}")
            }
            Rule::Charset { character, allowed } => {
                write!(f, "it contains {character:?}; only {allowed} are allowed")
            }
            Rule::Edges => f.write_str("it must start and end with a lowercase letter or digit"),
            Rule::PartialWildcard => {
                f.write_str("'+' may only stand alone as a whole level, as in \"bonker/+\"")
            }
        }
    }
}

/// A name that cannot become a topic level, with the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct NameError {
    /// What was being checked.
    pub kind: NameKind,
    /// The rejected value, as given.
    pub value: String,
    /// The rule it broke.
    pub rule: Rule,
}

fn forbidden_why(c: char) -> Option<&'static str> {
    match c {
        '/' => Some("the MQTT topic level separator"),
        '+' => Some("the MQTT single-level wildcard"),
        '#' => Some("the MQTT multi-level wildcard"),
        '\0' => Some("NUL, which MQTT forbids in topics"),
        '$' => Some("which marks broker-internal topics"),
        c if c.is_whitespace() => Some("whitespace, which is not allowed in a topic level"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    }
}

/// Checks the rules every topic level shares: not empty, not too long, no separator, wildcard,
/// NUL, whitespace or control character.
fn check_level(kind: NameKind, value: &str, max: usize) -> Result<(), NameError> {
    let fail = |rule| {
        Err(NameError {
            kind,
            value: value.to_owned(),
            rule,
        })
    };
    if value.is_empty() {
        return fail(Rule::Empty);
    }
    if let Some((character, why)) = value
        .chars()
        .find_map(|c| forbidden_why(c).map(|why| (c, why)))
    {
        return fail(Rule::Forbidden { character, why });
    }
    if value.len() > max {
        return fail(Rule::TooLong { max });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $validate:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value`, returning an error that names the rule it broke.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                $validate(&value)?;
                Ok(Self(value))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A Kubernetes namespace: a DNS label (RFC 1123) — lowercase letters, digits and `-`, starting and
    /// ending with a letter or digit, at most 63 bytes.
    Namespace,
    validate_namespace
);

name_type!(
    /// A desk name: letters, digits, `_` and `-`, at most 64 bytes. The same characters Home Assistant
    /// allows in discovery ids, so a desk name is usable there unchanged.
    DeskId,
    validate_desk
);

name_type!(
    /// A cluster name: any single topic level of at most 64 bytes.
    Cluster,
    validate_cluster
);

name_type!(
    /// A concrete topic prefix: one or more levels separated by `/` (for example `bonker` or
    /// `bonker/prod-eu`), no wildcards. Used to build topics to publish on.
    Prefix,
    validate_prefix
);

name_type!(
    /// A topic prefix that may hold `+` as a whole level (for example `bonker/+` to watch every
    /// cluster sharing a broker). Used only to build subscription filters.
    PrefixFilter,
    validate_prefix_filter
);

fn validate_namespace(value: &str) -> Result<(), NameError> {
    let kind = NameKind::Namespace;
    check_level(kind, value, NAMESPACE_MAX_LEN)?;
    let fail = |rule| {
        Err(NameError {
            kind,
            value: value.to_owned(),
            rule,
        })
    };
    if let Some(character) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return fail(Rule::Charset {
            character,
            allowed: "lowercase letters a-z, digits and '-'",
        });
    }
    if value.starts_with('-') || value.ends_with('-') {
        return fail(Rule::Edges);
    }
    Ok(())
}

fn validate_desk(value: &str) -> Result<(), NameError> {
    let kind = NameKind::Desk;
    check_level(kind, value, DESK_MAX_LEN)?;
    if let Some(character) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError {
            kind,
            value: value.to_owned(),
            rule: Rule::Charset {
                character,
                allowed: "letters A-Z and a-z, digits, '_' and '-'",
            },
        });
    }
    Ok(())
}

fn validate_cluster(value: &str) -> Result<(), NameError> {
    check_level(NameKind::Cluster, value, CLUSTER_MAX_LEN)
}

fn validate_prefix_levels(value: &str, allow_wildcard: bool) -> Result<(), NameError> {
    let kind = NameKind::Prefix;
    let fail = |rule| {
        Err(NameError {
            kind,
            value: value.to_owned(),
            rule,
        })
    };
    if value.is_empty() {
        return fail(Rule::Empty);
    }
    if value.len() > PREFIX_MAX_LEN {
        return fail(Rule::TooLong {
            max: PREFIX_MAX_LEN,
        });
    }
    for level in value.split('/') {
        if allow_wildcard && level == "+" {
            continue;
        }
        if allow_wildcard && level.contains('+') {
            return fail(Rule::PartialWildcard);
        }
        check_level(kind, level, PREFIX_MAX_LEN).map_err(|mut error| {
            error.value = value.to_owned();
            error
        })?;
    }
    Ok(())
}

fn validate_prefix(value: &str) -> Result<(), NameError> {
    validate_prefix_levels(value, false)
}

fn validate_prefix_filter(value: &str) -> Result<(), NameError> {
    validate_prefix_levels(value, true)
}

impl Prefix {
    /// The default prefix, `bonker`.
    pub fn default_prefix() -> Self {
        Self(crate::DEFAULT_PREFIX.to_owned())
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Self::default_prefix()
    }
}

impl PrefixFilter {
    /// True when the filter holds at least one `+` level.
    pub fn has_wildcard(&self) -> bool {
        self.0.split('/').any(|level| level == "+")
    }

    /// The concrete prefix, when the filter holds no wildcard.
    pub fn as_concrete(&self) -> Option<Prefix> {
        (!self.has_wildcard()).then(|| Prefix(self.0.clone()))
    }

    /// The levels before the first wildcard, as a concrete prefix (`bonker/+` → `bonker`). `None`
    /// when the filter starts with a wildcard.
    pub fn concrete_root(&self) -> Option<Prefix> {
        let root: Vec<&str> = self.0.split('/').take_while(|l| *l != "+").collect();
        (!root.is_empty()).then(|| Prefix(root.join("/")))
    }
}

impl Default for PrefixFilter {
    fn default() -> Self {
        Self(crate::DEFAULT_PREFIX.to_owned())
    }
}

impl From<Prefix> for PrefixFilter {
    fn from(prefix: Prefix) -> Self {
        Self(prefix.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_dns_label_rules() {
        for ok in ["default", "kube-system", "a", "payments-2", &"a".repeat(63)] {
            assert!(Namespace::new(ok).is_ok(), "{ok} should be valid");
        }
        let cases: &[(&str, Rule)] = &[
            ("", Rule::Empty),
            ("-a", Rule::Edges),
            ("a-", Rule::Edges),
            (
                "Payments",
                Rule::Charset {
                    character: 'P',
                    allowed: "lowercase letters a-z, digits and '-'",
                },
            ),
            (&"a".repeat(64), Rule::TooLong { max: 63 }),
        ];
        for (value, rule) in cases {
            let error = Namespace::new(*value).expect_err(value);
            assert_eq!(&error.rule, rule, "{value}");
        }
    }

    #[test]
    fn topic_breaking_characters_are_named_in_the_error() {
        for (value, character) in [
            ("a/b", '/'),
            ("+", '+'),
            ("a#", '#'),
            ("a\0", '\0'),
            ("a b", ' '),
        ] {
            let error = Namespace::new(value).expect_err(value);
            assert!(
                matches!(error.rule, Rule::Forbidden { character: c, .. } if c == character),
                "{value}: {error}"
            );
            let message = error.to_string();
            assert!(message.starts_with("invalid namespace"), "{message}");
        }
        let error = DeskId::new("alice/../bob").expect_err("slash");
        assert_eq!(
            error.to_string(),
            "invalid desk name \"alice/../bob\": it contains '/', the MQTT topic level separator"
        );
    }

    #[test]
    fn desks_allow_home_assistant_id_characters() {
        assert!(DeskId::new("Alice_Desk-2").is_ok());
        assert!(DeskId::new("alice.desk").is_err());
        assert!(DeskId::new("é").is_err());
    }

    #[test]
    fn prefixes_may_have_several_levels_but_no_empty_ones() {
        assert!(Prefix::new("bonker").is_ok());
        assert!(Prefix::new("bonker/prod-eu").is_ok());
        assert_eq!(Prefix::new("bonker/").expect_err("").rule, Rule::Empty);
        assert_eq!(Prefix::new("/bonker").expect_err("").rule, Rule::Empty);
        assert!(Prefix::new("bonker/+").is_err());
        assert!(Prefix::new("bonker/#").is_err());
        assert!(Prefix::new("$SYS").is_err());
    }

    #[test]
    fn prefix_filters_allow_whole_level_wildcards_only() {
        let filter = PrefixFilter::new("bonker/+").expect("valid");
        assert!(filter.has_wildcard());
        assert_eq!(
            filter.concrete_root(),
            Some(Prefix::new("bonker").expect("ok"))
        );
        assert_eq!(filter.as_concrete(), None);
        assert_eq!(
            PrefixFilter::new("bonker/a+").expect_err("").rule,
            Rule::PartialWildcard
        );
        assert!(PrefixFilter::new("bonker/#").is_err());
        let plain = PrefixFilter::new("bonker/prod").expect("valid");
        assert_eq!(
            plain.as_concrete().map(|p| p.to_string()),
            Some("bonker/prod".into())
        );
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        let ok: Namespace = serde_json::from_str("\"payments\"").expect("valid");
        assert_eq!(ok.as_str(), "payments");
        let error = serde_json::from_str::<Namespace>("\"a/#\"").expect_err("invalid");
        assert!(error.to_string().contains("invalid namespace"), "{error}");
    }
}
