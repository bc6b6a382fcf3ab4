//! Tests of scopes and grants.

use serde_json::json;

use super::*;

// ---- scopes ----

#[test]
fn scopes_parse() {
    let a = Access::parse_scope("repository:team-a/app:pull,push").unwrap();
    assert_eq!(
        a,
        Access {
            kind: "repository".into(),
            name: "team-a/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }
    );
    assert_eq!(a.to_scope(), "repository:team-a/app:pull,push");

    let a = Access::parse_scope("repository:localhost:5000/foo:pull").unwrap();
    assert_eq!(
        (a.kind.as_str(), a.name.as_str()),
        ("repository", "localhost:5000/foo")
    );
    assert_eq!(a.actions, vec!["pull"]);
    assert_eq!(a.to_scope(), "repository:localhost:5000/foo:pull");

    let a = Access::parse_scope("registry:catalog:*").unwrap();
    assert_eq!((a.kind.as_str(), a.name.as_str()), ("registry", "catalog"));
    assert_eq!(a.actions, vec!["*"]);

    let a = Access::parse_scope("repository(plugin):vieux/sshfs:pull").unwrap();
    assert_eq!(a.kind, "repository(plugin)");

    for bad in [
        "",
        "repository",
        "repository:foo",
        ":foo:pull",
        "repository::pull",
        "repository:foo:",
        "::",
        "repository:foo:pull,",
        "repository:foo:,pull",
        "repository:foo:pull,,push",
    ] {
        assert_eq!(Access::parse_scope(bad), None, "{bad:?}");
    }
}

#[test]
fn grants_allow() {
    let grant = Grant {
        subject: "alice".into(),
        access: vec![
            Access::parse_scope("repository:team-a/app:pull").unwrap(),
            Access::parse_scope("repository:team-a/app:push").unwrap(),
            Access::parse_scope("repository:team-b/app:*").unwrap(),
        ],
    };
    assert!(grant.allows("repository", "team-a/app", "pull"));
    assert!(grant.allows("repository", "team-a/app", "push"));
    assert!(!grant.allows("repository", "team-a/app", "delete"));
    assert!(grant.allows("repository", "team-b/app", "delete"));
    assert!(!grant.allows("repository", "team-c/app", "pull"));
    assert!(!grant.allows("registry", "team-a/app", "pull"));
    assert!(!grant.allows("repository", "team-a", "pull"));
}

#[test]
fn access_claims_tolerate_missing_actions() {
    let a: Vec<Access> = serde_json::from_value(json!([
        {"type": "repository", "name": "a", "actions": null},
        {"type": "repository", "name": "b"},
    ]))
    .unwrap();
    assert!(a.iter().all(|a| a.actions.is_empty()));
}
