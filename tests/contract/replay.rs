//! A stand-in server that answers with payloads transcribed from a docs page and records what
//! the client asked, so a test can check both the request dozor sends and how it reads the answer.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Asked {
    pub method: Method,
    /// Path and query, e.g. `/rest/1/x/crm.deal.list.json?start=0`.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Asked {
    /// The body read as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text (form-encoded requests).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// What the stand-in answers: status, content type and body, all from the docs page.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    /// `200 OK` with a JSON body.
    pub fn json(body: serde_json::Value) -> Self {
        Self::status_json(200, body)
    }

    /// A JSON body with the status the page gives it.
    pub fn status_json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    /// A status with a plain-text (or empty) body.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header (e.g. `Retry-After`).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Script = dyn Fn(&Asked) -> Answer + Send + Sync;

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    asked: Arc<Mutex<Vec<Asked>>>,
}

/// A running stand-in. Dropping it leaves the task running until the test's runtime ends.
pub struct Docs {
    /// `http://127.0.0.1:PORT` without a trailing slash.
    pub base: String,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl Docs {
    /// Starts a stand-in on a free loopback port; `script` picks the answer for every request.
    pub async fn start(script: impl Fn(&Asked) -> Answer + Send + Sync + 'static) -> Self {
        let shared = Shared {
            script: Arc::new(script),
            asked: Arc::default(),
        };
        let asked = shared.asked.clone();
        let app = Router::new().fallback(serve).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("http://{addr}"),
            asked,
        }
    }

    /// Every request received so far, oldest first.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

async fn serve(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let asked = Asked {
        method,
        uri: uri.to_string(),
        headers,
        body,
    };
    let answer = (shared.script)(&asked);
    shared.asked.lock().unwrap().push(asked);
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap(),
        [("content-type", answer.content_type)],
        answer.body,
    )
        .into_response();
    for (name, value) in answer.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value from the test"));
    }
    response
}

/// The keys of a JSON object, sorted; for comparing the simulator's answer with the page's shape.
pub fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Asserts that every key the docs answer has at `pointer` is also in the simulator's answer,
/// with a value of the same JSON type (null in the docs matches anything).
pub fn assert_same_shape(docs: &serde_json::Value, sim: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (docs, sim) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, dv) in d {
                let sv = s
                    .get(k)
                    .unwrap_or_else(|| panic!("simulator answer lacks `{at}/{k}`: {sim}"));
                assert_same_shape(dv, sv, &format!("{at}/{k}"));
            }
        }
        (Value::Array(d), Value::Array(s)) => {
            if let (Some(dv), Some(sv)) = (d.first(), s.first()) {
                assert_same_shape(dv, sv, &format!("{at}/0"));
            }
        }
        (Value::Null, _) => {}
        (d, s) => {
            let kind = |v: &Value| match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            assert_eq!(
                kind(d),
                kind(s),
                "`{at}`: the docs give {d}, the simulator {s}"
            );
        }
    }
}
