//! Access rules (`auth.access`): which account may pull, push, delete or list the catalog, on
//! which repositories.
//!
//! Without rules every authenticated user may do everything and anonymous requests nothing, as
//! in distribution. With rules, a request is allowed when one rule for its account (a name, `*`
//! for any authenticated user, `anonymous` for requests without credentials) names its action
//! and matches its repository. Push implies pull: every push starts with existence checks.

use crate::config::{AccessRule, ConfigError};

/// What a request does, as access rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Pull,
    Push,
    Delete,
    Catalog,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::Pull => "pull",
            Permission::Push => "push",
            Permission::Delete => "delete",
            Permission::Catalog => "catalog",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn parse(s: &str) -> Option<u8> {
        Some(match s {
            "pull" => Permission::Pull.bit(),
            "push" => Permission::Push.bit() | Permission::Pull.bit(),
            "delete" => Permission::Delete.bit(),
            "catalog" => Permission::Catalog.bit(),
            "*" => 0xff,
            _ => return None,
        })
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(String),
}

impl Identity {
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "-",
            Identity::User(u) => u,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Account {
    Named(String),
    AnyUser,
    Anonymous,
}

#[derive(Debug, Clone)]
struct Rule {
    account: Account,
    repositories: Vec<String>,
    permissions: u8,
}

/// The configured rules; `None` inside means "no rules": users everything, anonymous nothing.
#[derive(Debug, Clone, Default)]
pub struct AccessRules(Option<Vec<Rule>>);

impl AccessRules {
    pub fn from_config(rules: Option<&[AccessRule]>) -> Result<AccessRules, ConfigError> {
        let Some(rules) = rules else {
            return Ok(AccessRules(None));
        };
        let mut parsed = Vec::new();
        for rule in rules {
            let mut permissions = 0;
            for action in &rule.actions {
                permissions |= Permission::parse(action).ok_or_else(|| ConfigError::Invalid {
                    key: "auth.access",
                    reason: format!(
                        "account {:?}: unknown action {action:?} (pull, push, delete, catalog, *)",
                        rule.account
                    ),
                })?;
            }
            let account = match rule.account.as_str() {
                "*" => Account::AnyUser,
                "anonymous" => Account::Anonymous,
                "" => {
                    return Err(ConfigError::Invalid {
                        key: "auth.access",
                        reason: "a rule needs an account".into(),
                    })
                }
                name => Account::Named(name.to_string()),
            };
            parsed.push(Rule {
                account,
                repositories: rule.repositories.clone(),
                permissions,
            });
        }
        Ok(AccessRules(Some(parsed)))
    }

    /// Whether rules are configured at all.
    pub fn configured(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `who` may do `what` on `repo` (`None` for the catalog and `/v2/`).
    pub fn allows(&self, who: &Identity, what: Permission, repo: Option<&str>) -> bool {
        let Some(rules) = &self.0 else {
            return matches!(who, Identity::User(_));
        };
        rules.iter().any(|rule| {
            let account = match (&rule.account, who) {
                (Account::Anonymous, Identity::Anonymous) => true,
                (Account::AnyUser, Identity::User(_)) => true,
                (Account::Named(n), Identity::User(u)) => n == u,
                _ => false,
            };
            let repository = match (what, repo) {
                (Permission::Catalog, _) | (_, None) => true,
                (_, Some(repo)) => rule.repositories.iter().any(|p| glob(p, repo)),
            };
            account && repository && rule.permissions & what.bit() != 0
        })
    }
}

/// `*` matches any run of characters (`/` included), `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has swallowed: on a mismatch it
    // swallows one more character (linear backtracking, no recursion).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(account: &str, repositories: &[&str], actions: &[&str]) -> AccessRule {
        AccessRule {
            account: account.into(),
            repositories: repositories.iter().map(|s| s.to_string()).collect(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn user(name: &str) -> Identity {
        Identity::User(name.into())
    }

    #[test]
    fn globs() {
        assert!(glob("team-a/*", "team-a/app"));
        assert!(glob("team-a/*", "team-a/x/y"));
        assert!(!glob("team-a/*", "team-b/app"));
        assert!(!glob("team-a/*", "team-a"));
        assert!(glob("*", "anything/at/all"));
        assert!(glob("*/base-?", "x/base-1"));
        assert!(!glob("*/base-?", "x/base-12"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
    }

    #[test]
    fn without_rules_users_may_everything_and_anonymous_nothing() {
        let rules = AccessRules::from_config(None).unwrap();
        assert!(rules.allows(&user("x"), Permission::Delete, Some("a")));
        assert!(rules.allows(&user("x"), Permission::Catalog, None));
        assert!(!rules.allows(&Identity::Anonymous, Permission::Pull, Some("a")));
    }

    #[test]
    fn rules_of_a_typical_team() {
        let rules = AccessRules::from_config(Some(&[
            rule("ci", &["*"], &["pull"]),
            rule("team-a", &["team-a/*"], &["push", "delete"]),
            rule("anonymous", &["public/*"], &["pull"]),
            rule("admin", &["*"], &["*"]),
            rule("*", &["shared/*"], &["pull"]),
        ]))
        .unwrap();
        let (ci, team, admin, other) = (user("ci"), user("team-a"), user("admin"), user("eve"));
        assert!(rules.allows(&ci, Permission::Pull, Some("team-a/app")));
        assert!(!rules.allows(&ci, Permission::Push, Some("team-a/app")));
        assert!(!rules.allows(&ci, Permission::Catalog, None));
        assert!(rules.allows(&team, Permission::Push, Some("team-a/app")));
        assert!(
            rules.allows(&team, Permission::Pull, Some("team-a/app")),
            "push implies pull"
        );
        assert!(rules.allows(&team, Permission::Delete, Some("team-a/app")));
        assert!(!rules.allows(&team, Permission::Push, Some("team-b/app")));
        assert!(!rules.allows(&team, Permission::Pull, Some("public-ish")));
        assert!(rules.allows(&Identity::Anonymous, Permission::Pull, Some("public/x")));
        assert!(!rules.allows(&Identity::Anonymous, Permission::Push, Some("public/x")));
        assert!(!rules.allows(&Identity::Anonymous, Permission::Pull, Some("team-a/app")));
        assert!(rules.allows(&admin, Permission::Catalog, None));
        assert!(rules.allows(&other, Permission::Pull, Some("shared/base")));
        assert!(!rules.allows(&Identity::Anonymous, Permission::Pull, Some("shared/base")));
        assert!(!rules.allows(&other, Permission::Pull, Some("public/x")));
    }

    #[test]
    fn unknown_actions_are_refused() {
        let err = AccessRules::from_config(Some(&[rule("a", &["*"], &["write"])])).unwrap_err();
        assert!(err.to_string().contains("write"), "{err}");
    }
}
