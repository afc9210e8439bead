//! Secrets through the API: versions, staging, one rollout per version, the
//! values only the instance's node reads back, bad input that names the
//! field and never repeats a value, and a failed rollout that goes back to the
//! previous secrets version. The node agent is simulated by status reports.

mod common;

use base64::Engine as _;
use common::env::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SECRETS: &str = "/v1/orgs/acme/apps/web/envs/prod/secrets";

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Names and versions of the env's secrets, and what is staged: `NAME@v` or `NAME@v+set` / `NAME+unset`.
fn summary(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let mut s = i["name"].as_str().unwrap().to_owned();
            if let Some(v) = i["version"].as_u64() {
                s.push_str(&format!("@{v}"));
            }
            if let Some(c) = i["staged"]["change"].as_str() {
                s.push_str(&format!("+{c}"));
            }
            s
        })
        .collect()
}

/// Live instances, as `(id, secrets_version)`.
fn live(body: &Value) -> Vec<(String, Option<u64>)> {
    items(body)
        .into_iter()
        .filter(|i| i["desired_state"] == "running" && i["status"] != "stopped" && i["status"] != "failed")
        .map(|i| (id(&i), i["secrets_version"].as_u64()))
        .collect()
}

async fn deploys(s: &TestServer) -> Vec<Value> {
    items(&s.get(DEPLOYS).await.body)
}

/// The node `n1`'s own token: the only caller that reads values.
async fn node_token(s: &TestServer) -> String {
    s.issue(json!({"name": "agent", "role": "node", "node": "n1"})).await
}

async fn values(s: &TestServer, node: &str, instance: &str) -> (StatusCode, Value) {
    let r = s.call_as(Some(node), Method::GET, &format!("/v1/instances/{instance}/secrets"), None, &[]).await;
    (r.status, r.body)
}

fn decoded(body: &Value) -> Vec<(String, Vec<u8>)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let v = base64::engine::general_purpose::STANDARD.decode(i["value_base64"].as_str().unwrap()).unwrap();
            (i["name"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

#[tokio::test]
async fn staged_secrets_deploy_as_one_version_and_one_rollout() {
    let s = setup(Default::default()).await;
    let node = node_token(&s).await;
    let rel = release(&s, 'a').await;
    let (_, first) = deploy_ready(&s, &rel, 1).await;
    assert_eq!(instance(&s, &first[0]).await["secrets_version"], Value::Null, "no secrets yet");

    // Two staged: nothing rolls out, and nothing is a version yet.
    for (k, v) in [("DATABASE_URL", b"postgres://u:p@db/x".as_slice()), ("API_KEY", b"k\x00\xffbinary")] {
        let r = s.post(SECRETS, json!({"set": {k: b64(v)}, "stage": true})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body.get("deploy").is_none(), "{}", r.body);
    }
    let list = s.get(SECRETS).await.body;
    assert_eq!(
        (list["version"].as_u64(), summary(&list)),
        (Some(0), vec!["API_KEY+set".into(), "DATABASE_URL+set".into()])
    );
    assert_eq!(deploys(&s).await.len(), 1);

    // One deploy: version 1, one deploy of kind `secrets`, the same release.
    let r = s.call(Method::POST, &format!("{SECRETS}/deploy"), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["version"].as_u64(), r.body["desired_version"].as_u64()), (Some(1), Some(1)), "{}", r.body);
    assert_eq!(summary(&r.body), ["API_KEY@1", "DATABASE_URL@1"]);
    let dep = r.body["deploy"].clone();
    assert_eq!((dep["kind"].as_str(), dep["release_id"].as_str()), (Some("secrets"), Some(rel.as_str())), "{dep}");
    assert_eq!((dep["secrets_version"].as_u64(), dep["previous_secrets_version"].as_u64()), (Some(1), None));
    let mut answered = r.body.clone();
    for answer_only in ["deploy", "new_version"] {
        answered.as_object_mut().unwrap().remove(answer_only);
    }
    assert_eq!(s.get(SECRETS).await.body, answered, "the answer is what the list shows after");
    assert_eq!(deploys(&s).await.len(), 2, "exactly one rollout");
    let r = s.call(Method::POST, &format!("{SECRETS}/deploy"), None, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "nothing staged: {}", r.body);

    // The rollout: a new instance with version 1 replaces the old one once ready.
    let dep_id = dep["id"].as_str().unwrap().to_owned();
    let body = until(&s, INSTANCES, "an instance with secrets", |b| live(b).iter().any(|(_, v)| *v == Some(1))).await;
    let (new, _) = live(&body).into_iter().find(|(_, v)| *v == Some(1)).unwrap();
    let d = s.get(DESCRIBE).await.body;
    assert_eq!(d["processes"][0]["desired_secrets_version"], 1, "{d}");
    assert_eq!(d["processes"][0]["instances_by_secrets_version"], json!({"1": 1, "none": 1}), "{d}");
    assert!(
        differences(&d).iter().any(|x| x.starts_with("1 instance(s) run no secrets, the env's is 1")),
        "{:?}",
        differences(&d)
    );
    let (status, got) = values(&s, &node, &new).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["version"], 1);
    assert_eq!(
        decoded(&got),
        [
            ("API_KEY".to_owned(), b"k\x00\xffbinary".to_vec()),
            ("DATABASE_URL".to_owned(), b"postgres://u:p@db/x".to_vec())
        ]
    );
    report(&s, &new, json!({"status": "running", "health": "passing"})).await;
    deploy_until(&s, &dep_id, "succeeded").await;
    let body = until(&s, INSTANCES, "the old instance stopped", |b| live(b).len() == 1).await;
    assert_eq!(live(&body), [(new.clone(), Some(1))]);
    let d = s.get(DESCRIBE).await.body;
    assert_eq!(differences(&d), Vec::<String>::new(), "{d}");

    // Rotating one, unstaged: version 2 and a rollout at once; the other value is carried over.
    let r = s.post(SECRETS, json!({"set": {"API_KEY": b64(b"rotated")}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(summary(&r.body), ["API_KEY@2", "DATABASE_URL@1"]);
    assert_eq!(r.body["deploy"]["previous_secrets_version"], 1);
    let body = until(&s, INSTANCES, "a version 2 instance", |b| live(b).iter().any(|(_, v)| *v == Some(2))).await;
    let (v2, _) = live(&body).into_iter().find(|(_, v)| *v == Some(2)).unwrap();
    let (_, got) = values(&s, &node, &v2).await;
    assert_eq!(decoded(&got)[0], ("API_KEY".to_owned(), b"rotated".to_vec()));
    assert_eq!(decoded(&got)[1].1, b"postgres://u:p@db/x");
    // The old instance still reads the version it booted with.
    let (_, old) = values(&s, &node, &new).await;
    assert_eq!((old["version"].as_u64(), decoded(&old)[0].1.as_slice()), (Some(1), b"k\x00\xffbinary".as_slice()));

    // Setting the same value again changes nothing: no version, no rollout.
    let before = deploys(&s).await.len();
    let r = s.post(SECRETS, json!({"set": {"API_KEY": b64(b"rotated")}})).await;
    assert_eq!((r.status, r.body["version"].as_u64()), (StatusCode::OK, Some(2)), "{}", r.body);
    assert!(r.body.get("deploy").is_none() && r.body.get("new_version").is_none(), "{}", r.body);
    assert_eq!(deploys(&s).await.len(), before);

    // Events carry names and versions, never values.
    let events = s.get("/v1/events?limit=1000").await.body.to_string();
    for v in ["postgres://u:p@db/x", "rotated", &b64(b"rotated"), &b64(b"postgres://u:p@db/x")] {
        assert!(!events.contains(v), "{v} in the events");
    }
    assert!(events.contains("secrets.version_created") && events.contains("secrets.staged"));
}

#[tokio::test]
async fn a_failed_secrets_rollout_goes_back_to_the_previous_version() {
    let s = setup(Default::default()).await;
    let rel = release(&s, 'a').await;
    assert_eq!(s.post(SECRETS, json!({"set": {"TOKEN": b64(b"good")}})).await.status, StatusCode::OK);
    let (_, first) = deploy_ready(&s, &rel, 1).await;
    assert_eq!(instance(&s, &first[0]).await["secrets_version"], 1);

    let r = s.post(SECRETS, json!({"set": {"TOKEN": b64(b"breaks-the-app")}})).await;
    let dep = r.body["deploy"]["id"].as_str().unwrap().to_owned();
    let body = until(&s, INSTANCES, "a version 2 instance", |b| live(b).iter().any(|(_, v)| *v == Some(2))).await;
    let (new, _) = live(&body).into_iter().find(|(_, v)| *v == Some(2)).unwrap();
    report(&s, &new, json!({"status": "failed", "exit_code": 1, "reason": "the entrypoint exited with code 1"})).await;
    let d = deploy_until(&s, &dep, "failed").await;
    assert!(d["reason"].as_str().unwrap().ends_with("env back on secrets version 1"), "{d}");
    let env = s.get("/v1/orgs/acme/apps/web/envs/prod").await.body;
    assert_eq!(
        (env["desired_release_id"].as_str(), env["desired_secrets_version"].as_u64()),
        (Some(rel.as_str()), Some(1))
    );
    assert_quiet(&s, "after a failed secrets rollout").await;
    assert_eq!(live(&s.get(INSTANCES).await.body), [(first[0].clone(), Some(1))], "the old instance keeps running");
    // The latest version stays 2: the next change builds on it, and a deploy rolls it out.
    assert_eq!(s.get(SECRETS).await.body["version"], 2);
}

#[tokio::test]
async fn bad_input_names_the_field_and_never_repeats_a_value() {
    let s = setup(Default::default()).await;
    let secret = "s3cr3t-Value-that-must-not-echo";
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({}), "set", "at least one secret"),
        (json!({"set": {"lower-case": b64(b"x")}}), "set.lower-case", "an environment variable name"),
        (json!({"set": {"VT_RESERVED": b64(b"x")}}), "set.VT_RESERVED", "secret name"),
        (json!({"set": {"K": secret}}), "set.K", "not base64"),
        (json!({"set": {"K": ""}}), "set.K", "is empty"),
        (json!({"set": {"K": b64(&vec![b'a'; 64 * 1024 + 1])}}), "set.K", "at most 65536 bytes"),
        (json!({"set": {"K": b64(b"x")}, "unset": ["K"]}), "unset[0]", "both set and unset"),
        (json!({"unset": ["NOPE"]}), "unset", "no secret `NOPE`"),
        (json!({"set": {"K": b64(b"x")}, "stage": secret}), "stage", "must be `true` or `false`"),
        (json!({"set": {"K": 12345}}), "set.K", "must be a string"),
        (json!({"set": {"K": b64(b"x")}, "sett": {}}), "sett", "unknown field"),
    ];
    for (body, field, says) in cases {
        let r = s.post(SECRETS, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.body);
        assert_eq!(r.error_field(), field, "{body}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
        assert!(!msg.contains(secret) && !msg.contains("12345"), "a value in an error: {msg}");
    }
    // Limits over the env, not just one request: the bytes, then the count.
    let many: serde_json::Map<String, Value> = (0..201).map(|i| (format!("K{i}"), json!(b64(b"x")))).collect();
    let r = s.post(SECRETS, json!({"set": many})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "set"), "one request: {}", r.body);
    let big = b64(&vec![b'b'; 60 * 1024]);
    let half: serde_json::Map<String, Value> = (0..16).map(|i| (format!("BIG{i}"), json!(big))).collect();
    assert_eq!(s.post(SECRETS, json!({"set": half, "stage": true})).await.status, StatusCode::OK);
    let more: serde_json::Map<String, Value> = (16..18).map(|i| (format!("BIG{i}"), json!(big))).collect();
    let r = s.post(SECRETS, json!({"set": more})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("1048576 bytes in all"), "{}", r.body);
    let small: serde_json::Map<String, Value> = (0..180).map(|i| (format!("K{i}"), json!(b64(b"x")))).collect();
    assert_eq!(s.post(SECRETS, json!({"set": small, "stage": true})).await.status, StatusCode::OK);
    let five: serde_json::Map<String, Value> = (180..185).map(|i| (format!("K{i}"), json!(b64(b"x")))).collect();
    let r = s.post(SECRETS, json!({"set": five})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("at most 200 secrets; this would make 201"),
        "{}",
        r.body
    );
    // Nothing of the refused requests was kept.
    let list = s.get(SECRETS).await.body;
    assert_eq!((list["version"].as_u64(), summary(&list).len()), (Some(0), 196), "{list}");
}

#[tokio::test]
async fn secrets_read_as_environment_variables_must_exist_and_be_text() {
    let s = setup(Default::default()).await;
    let manifest = manifest_with_health()
        .replace("[processes.web.healthcheck]", "secret_env = [\"DB\"]\n\n[processes.web.healthcheck]");
    let r = s
        .post(
            "/v1/orgs/acme/apps/web/releases",
            json!({"image": format!("acme/web@{}", digest('a')), "manifest": manifest}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rel = r.body["id"].as_str().unwrap().to_owned();
    let r = s.post(DEPLOYS, json!({"release_id": rel})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "release_id"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("`vt secrets set DB=...`"), "{}", r.body);
    assert_eq!(s.post(SECRETS, json!({"set": {"DB": b64(b"x")}})).await.status, StatusCode::OK);
    deploy(&s, &rel).await;
    let r = s.post(SECRETS, json!({"unset": ["DB"]})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "unset"), "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("reads `DB` as an environment variable"),
        "{}",
        r.body
    );
    let r = s.post(SECRETS, json!({"set": {"DB": b64(b"a\0b")}})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "set.DB"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("NUL byte"), "{}", r.body);
}

#[tokio::test]
async fn idempotent_changes_replay_and_concurrent_ones_do_not_lose_updates() {
    let s = setup(Default::default()).await;
    let body = json!({"set": {"A": b64(b"1")}}).to_string();
    let key = [("Idempotency-Key", "secrets-1")];
    let first = s.call(Method::POST, SECRETS, Some(&body), &key).await;
    let again = s.call(Method::POST, SECRETS, Some(&body), &key).await;
    assert_eq!((first.status, again.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first.body, again.body);
    assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let other = json!({"set": {"A": b64(b"2")}}).to_string();
    let r = s.call(Method::POST, SECRETS, Some(&other), &key).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "same key, other value: {}", r.body);
    // The idempotency record keeps the answer only, which holds no value.
    assert!(!first.body.to_string().contains(&b64(b"1")));

    // Ten concurrent changes: each either commits a version or is told to retry; none is lost silently.
    let mut tasks = vec![];
    for i in 0..10 {
        let (url, token, http) = (s.url(SECRETS), s.token.clone(), s.http.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"set": {format!("C{i}"): b64(b"v")}}))
                .send()
                .await
                .unwrap();
            r.status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {}
            other => panic!("{other}"),
        }
    }
    let list = s.get(SECRETS).await.body;
    assert_eq!(list["version"].as_u64(), Some(1 + ok), "one version per committed change: {list}");
    assert_eq!(summary(&list).len() as u64, 1 + ok, "every committed change is in the latest version: {list}");
}

#[tokio::test]
async fn a_corrupted_value_is_an_error_naming_the_env_and_version_never_the_value() {
    let s = setup(Default::default()).await;
    let node = node_token(&s).await;
    let value = b"do-not-show-me";
    assert_eq!(s.post(SECRETS, json!({"set": {"DB": b64(value)}})).await.status, StatusCode::OK);
    let rel = release(&s, 'a').await;
    deploy(&s, &rel).await;
    let body = until(&s, INSTANCES, "an instance", |b| !live(b).is_empty()).await;
    let (instance, _) = live(&body).remove(0);
    assert_eq!(values(&s, &node, &instance).await.0, StatusCode::OK);
    // One bit of the stored ciphertext flipped, behind the store's back.
    let db =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", s.dir.path().join("vt.sqlite").display())).await.unwrap();
    let sealed: String =
        sqlx::query_scalar("SELECT sealed FROM secret_values WHERE name = 'DB'").fetch_one(&db).await.unwrap();
    let mut raw = base64::engine::general_purpose::STANDARD.decode(&sealed[3..]).unwrap();
    *raw.last_mut().unwrap() ^= 1;
    let flipped = format!("v1:{}", b64(&raw));
    sqlx::query("UPDATE secret_values SET sealed = $1 WHERE name = 'DB'").bind(flipped).execute(&db).await.unwrap();
    let (status, body) = values(&s, &node, &instance).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    let env = s.get("/v1/orgs/acme/apps/web/envs/prod").await.body["id"].as_str().unwrap().to_owned();
    assert!(msg.contains(&format!("secret `DB` of env {env} (version 1) does not decrypt")), "{msg}");
    assert!(!msg.contains("do-not-show-me") && !body.to_string().contains(&b64(value)), "{body}");
}
