//! Tests of the comparison and of JSON paths.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> ResponseSummary {
    ResponseSummary {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body_len: body.len() as u64,
        body_hash: Fnv64::of(body.as_bytes()),
        body: Some(body.as_bytes().to_vec()),
        ..ResponseSummary::default()
    }
}

fn rules(ignore: &[&str]) -> DiffRules {
    DiffRules {
        ignore_paths: ignore.iter().map(|p| JsonPath::parse(p).unwrap()).collect(),
        ..DiffRules::default()
    }
}

#[test]
fn identical_responses_match() {
    let a = resp(
        200,
        &[("content-type", "application/json"), ("date", "Mon")],
        r#"{"a":1}"#,
    );
    let mut b = a.clone();
    b.headers[1].1 = b"Tue".to_vec();
    assert_eq!(
        compare(&a, &b, &rules(&[])),
        Comparison::only(DiffOutcome::Match)
    );
}

#[test]
fn stages_are_reported_in_order_and_the_first_names_the_outcome() {
    let a = resp(
        200,
        &[("content-type", "application/json")],
        r#"{"user":{"name":"ada"},"n":1}"#,
    );
    let b = resp(
        500,
        &[("content-type", "text/html")],
        r#"{"user":{"name":"bob"},"n":1}"#,
    );
    let c = compare(&a, &b, &rules(&[]));
    assert_eq!(c.outcome, DiffOutcome::Status);
    assert_eq!(c.fields, ["status", "header:content-type", "$.user.name"]);
    let b = resp(
        200,
        &[("content-type", "application/json")],
        r#"{"user":{"name":"bob"},"n":1}"#,
    );
    let c = compare(&a, &b, &rules(&[]));
    assert_eq!(
        (c.outcome, c.fields),
        (DiffOutcome::Body, vec!["$.user.name".to_string()])
    );
}

#[test]
fn set_cookie_is_compared_by_names_only() {
    let a = resp(
        200,
        &[
            ("set-cookie", "sid=1; Path=/"),
            ("set-cookie", "theme=dark"),
        ],
        "",
    );
    let b = resp(
        200,
        &[
            ("set-cookie", "theme=light"),
            ("set-cookie", "sid=2; Path=/"),
        ],
        "",
    );
    assert_eq!(compare(&a, &b, &rules(&[])).outcome, DiffOutcome::Match);
    let b = resp(200, &[("set-cookie", "sid=2")], "");
    assert_eq!(compare(&a, &b, &rules(&[])).fields, ["header:set-cookie"]);
}

#[test]
fn ignored_headers_and_paths_are_not_differences() {
    let a = resp(
        200,
        &[("location", "/a")],
        r#"{"ts":1,"items":[{"id":1,"v":"x"}],"meta":{"rid":"a"}}"#,
    );
    let b = resp(
        200,
        &[("location", "/b")],
        r#"{"ts":2,"items":[{"id":9,"v":"x"}],"meta":{"rid":"b"}}"#,
    );
    let mut r = rules(&["$.ts", "$.items[*].id", "$..rid"]);
    r.ignore_headers.push("Location".into());
    assert_eq!(compare(&a, &b, &r), Comparison::only(DiffOutcome::Match));
    let c = compare(&a, &b, &rules(&["$.meta"]));
    assert_eq!(c.fields, ["header:location", "$.items[0].id", "$.ts"]);
}

#[test]
fn non_json_or_uncapped_bodies_differ_as_a_whole() {
    let a = resp(200, &[], "hello");
    let b = resp(200, &[], "world");
    assert_eq!(compare(&a, &b, &rules(&[])).fields, ["$"]);
    let mut a2 = a.clone();
    a2.body = None;
    assert_eq!(compare(&a2, &b, &rules(&[])).fields, ["$"]);
    let mut b2 = a.clone();
    b2.body = None;
    assert_eq!(compare(&a2, &b2, &rules(&[])).outcome, DiffOutcome::Match);
}

#[test]
fn missing_keys_and_elements_are_reported_where_they_are() {
    let a = resp(200, &[], r#"{"a":[1,2,3],"odd key":1}"#);
    let b = resp(200, &[], r#"{"a":[1,2],"new":true}"#);
    assert_eq!(
        compare(&a, &b, &rules(&[])).fields,
        ["$.a[2]", "$.new", "$['odd key']"]
    );
}

#[test]
fn json_paths_parse_and_explain_errors() {
    for ok in [
        "$",
        "$.a",
        "$['a b'].c",
        "$.items[*].id",
        "$..request_id",
        "$..[0]",
        "$.*",
        "$[\"x\"]",
    ] {
        assert!(JsonPath::parse(ok).is_ok(), "{ok}");
    }
    let e = JsonPath::parse("items.id").unwrap_err();
    assert_eq!(
        (e.at, e.problem),
        (1, "it must start with `$` (the document root)")
    );
    assert!(
        e.to_string().contains("`items.id` is not a JSON path"),
        "{e}"
    );
    for bad in ["$.", "$[", "$[x]", "$['a'", "$[1", "$.a.[0]", "$a"] {
        assert!(JsonPath::parse(bad).is_err(), "{bad}");
    }
    let p = JsonPath::parse("$..build").unwrap();
    assert!(p.covers_rendered("$.build"));
    assert!(p.covers_rendered("$.meta.build.sha"));
    assert!(!p.covers_rendered("$.builder"));
    assert!(JsonPath::parse("$.items[*].id")
        .unwrap()
        .covers_rendered("$.items[3].id"));
    assert!(JsonPath::parse("$['odd key']")
        .unwrap()
        .covers_rendered("$['odd key']"));
}

#[test]
fn json_leaves_lists_every_leaf() {
    let v = json!({"b": [1, {"c": null}], "a": {}, "d": "x"});
    let paths: Vec<String> = json_leaves(&v).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["$.a", "$.b[0]", "$.b[1].c", "$.d"]);
    assert_ne!(
        json_leaves(&json!({"a": 1}))[0].1,
        json_leaves(&json!({"a": 2}))[0].1
    );
}

fn json_doc() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z _]{1,5}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Changing one leaf of a document is found, and only it.
    #[test]
    fn json_diff_finds_exactly_the_changed_leaf(doc in json_doc(), pick in any::<usize>()) {
        let leaves = json_leaves(&doc);
        let (path, _) = &leaves[pick % leaves.len()];
        let steps = parse_concrete(path).unwrap();
        let mut changed = doc.clone();
        let mut at = &mut changed;
        for s in &steps {
            at = match s {
                Step::Key(k) => &mut at[k.as_str()],
                Step::Index(i) => &mut at[*i],
            };
        }
        *at = json!("surely new");
        let a = resp(200, &[], &doc.to_string());
        let b = resp(200, &[], &changed.to_string());
        let c = compare(&a, &b, &rules(&[]));
        prop_assert_eq!(c.outcome, DiffOutcome::Body);
        prop_assert_eq!(c.fields, vec![path.clone()]);
        // And ignoring exactly it makes the pair match.
        let ignore = JsonPath::parse(path).unwrap();
        prop_assert!(ignore.covers_rendered(path));
        prop_assert_eq!(compare(&a, &b, &rules(&[path.as_str()])).outcome, DiffOutcome::Match);
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,20}") {
        let _ = JsonPath::parse(&s);
    }
}
