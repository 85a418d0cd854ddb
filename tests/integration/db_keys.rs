//! The database key backend against a local server that checks LiteLLM's documented
//! request and response shapes (LiteLLM's real endpoints need Postgres and Prisma engines,
//! which cannot be installed here: see the README, Status).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use fleet::driver::{Driver, StepCtx};
use fleet::litellm::db_keys::DatabaseKeyStore;
use fleet::litellm::resources::KeyDriver;
use fleet::resource::{Address, Resource};
use fleet::state::Record;

const MASTER: &str = "sk-fleet-admin-test-master-key-0123456789";

#[derive(Default)]
struct Fake {
    keys: BTreeMap<String, Value>, // alias → row (token = sha256 of the key)
    calls: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn authorised(h: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    match h.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == format!("Bearer {MASTER}") => Ok(()),
        _ => {
            Err((StatusCode::UNAUTHORIZED, Json(json!({"error": {"message": "Authentication Error", "code": "401"}}))))
        }
    }
}

fn bad(msg: &str) -> (StatusCode, Json<Value>) {
    (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": msg, "code": "400"}})))
}

type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

async fn list(State(s): State<Shared>, h: HeaderMap, Query(q): Query<BTreeMap<String, String>>) -> Reply {
    authorised(&h)?;
    let mut s = s.lock().unwrap();
    s.calls.push("list".into());
    if q.get("return_full_object").map(String::as_str) != Some("true") {
        return Err(bad("fleet must ask for full objects to see aliases and models"));
    }
    let alias = q.get("key_alias").ok_or_else(|| bad("fleet must filter by key_alias"))?;
    let keys: Vec<Value> = s.keys.get(alias).cloned().into_iter().collect();
    Ok(Json(json!({"keys": keys, "total_count": keys.len(), "current_page": 1, "total_pages": 1})))
}

async fn generate(State(s): State<Shared>, h: HeaderMap, Json(b): Json<Value>) -> Reply {
    authorised(&h)?;
    let mut s = s.lock().unwrap();
    s.calls.push("generate".into());
    let alias = b["key_alias"].as_str().ok_or_else(|| bad("key_alias: string required"))?.to_string();
    let models = b["models"].as_array().filter(|m| !m.is_empty() && m.iter().all(Value::is_string));
    let models = models.ok_or_else(|| bad("models: non-empty list of strings required"))?.clone();
    if !b["metadata"]["agent"].is_string() {
        return Err(bad("metadata.agent required"));
    }
    if s.keys.contains_key(&alias) {
        return Err(bad("Unique key aliases across all keys are required"));
    }
    let key = format!("sk-{}", hex::encode(rand_bytes()));
    let token = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
    s.keys.insert(
        alias.clone(),
        json!({"token": token, "key_alias": alias, "models": models, "metadata": b["metadata"]}),
    );
    Ok(Json(json!({"key": key, "token": token, "key_alias": alias, "models": models, "metadata": b["metadata"]})))
}

async fn update(State(s): State<Shared>, h: HeaderMap, Json(b): Json<Value>) -> Reply {
    authorised(&h)?;
    let mut s = s.lock().unwrap();
    s.calls.push("update".into());
    let key = b["key"].as_str().ok_or_else(|| bad("key required"))?;
    let row = s.keys.values_mut().find(|r| r["token"] == key);
    let row = row.ok_or((StatusCode::NOT_FOUND, Json(json!({"error": {"message": "key not found"}}))))?;
    row["models"] = b["models"].clone();
    row["metadata"] = b["metadata"].clone();
    Ok(Json(row.clone()))
}

async fn delete(State(s): State<Shared>, h: HeaderMap, Json(b): Json<Value>) -> Reply {
    authorised(&h)?;
    let mut s = s.lock().unwrap();
    s.calls.push("delete".into());
    let keys: Vec<String> = serde_json::from_value(b["keys"].clone()).map_err(|_| bad("keys: list required"))?;
    let before = s.keys.len();
    s.keys.retain(|_, r| !keys.iter().any(|k| r["token"] == k.as_str()));
    if s.keys.len() == before {
        return Err((StatusCode::NOT_FOUND, Json(json!({"error": {"message": "no such key"}}))));
    }
    Ok(Json(json!({"deleted_keys": keys})))
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b
}

fn key_resource(home: &std::path::Path, models: &[&str]) -> Resource {
    Resource::new(
        Address::Key("alice".into()),
        &json!({
            "alias": "fleet-alice",
            "models": models,
            "metadata": {"agent": "alice"},
            "env_file": home.join("agents/alice/env"),
            "base_url": "http://127.0.0.1:4000/v1",
            "model": models[0],
        }),
        vec![],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn database_keys_are_looked_up_minted_rescoped_and_revoked_through_the_api() {
    let fake: Shared = Arc::default();
    let app = Router::new()
        .route("/key/list", get(list))
        .route("/key/generate", post(generate))
        .route("/key/update", post(update))
        .route("/key/delete", post(delete))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let master_file = dir.path().join("master.key");
    std::fs::write(&master_file, MASTER).unwrap();
    let store = Arc::new(DatabaseKeyStore::new(&url, &format!("file:{}", master_file.display())));
    let driver = KeyDriver { store: store.clone() };
    let ctx = StepCtx::silent("key.alice");

    let r = key_resource(dir.path(), &["demo-small"]);
    let out = driver.create(&r, &ctx).await.unwrap();
    let env = std::fs::read_to_string(dir.path().join("agents/alice/env")).unwrap();
    let raw = env.lines().find_map(|l| l.strip_prefix("OPENAI_API_KEY=")).unwrap().to_string();
    let token = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(raw.as_bytes()));
    assert_eq!(out["hash"], token, "only the hash is kept");
    assert_eq!(fake.lock().unwrap().calls, vec!["list", "generate"], "looked up by alias first");

    // A re-run (e.g. state lost) finds the alias and keeps the key: never a second one.
    let out2 = driver.create(&r, &ctx).await.unwrap();
    assert_eq!(out2["hash"], token);
    assert_eq!(fake.lock().unwrap().keys.len(), 1);
    assert!(!fake.lock().unwrap().calls.iter().skip(2).any(|c| c == "generate"));

    // A scope change updates the same key.
    let prior = Record {
        address: "key.alice".into(),
        kind: "key".into(),
        fingerprint: r.fingerprint.clone(),
        inputs: r.inputs.clone(),
        outputs: out,
        deps: vec![],
    };
    let r2 = key_resource(dir.path(), &["demo-large", "demo-small"]);
    driver.update(&r2, &prior, &ctx).await.unwrap();
    assert_eq!(fake.lock().unwrap().keys["fleet-alice"]["models"], json!(["demo-large", "demo-small"]));
    assert_eq!(fake.lock().unwrap().keys["fleet-alice"]["token"], token);

    // Revoke.
    driver.delete(&prior, &ctx).await.unwrap();
    assert!(fake.lock().unwrap().keys.is_empty());
    assert!(!dir.path().join("agents/alice/env").exists());

    // A wrong master key is a clear error that never echoes a key.
    std::fs::write(&master_file, "sk-wrong-master-key-000000000000").unwrap();
    let err = format!("{:?}", driver.create(&r, &ctx).await.unwrap_err());
    assert!(
        err.contains("LiteLLM /key/list") && err.contains("answered 401 Unauthorized: Authentication Error"),
        "{err}"
    );
    assert!(!err.contains("sk-wrong"), "{err}");
}
