//! The operator's side of tool pins, on the sidecar's admin port (behind its
//! token): `GET /mcp/tools` lists what is pinned and which changed
//! definitions wait for approval; `POST /mcp/approve {"tool": "server/tool"}`
//! pins the waiting definition, so the tool is listed and callable again
//! (`tollgate mcp tools|approve` call these).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::catalog::{PENDING, PINS};
use super::Gateway;
use crate::audit::{rfc3339_millis, AuditRecord};
use crate::limits::Store;

#[derive(Deserialize)]
struct Approve {
    tool: String,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn store(gw: &Gateway) -> Result<Store, Box<Response>> {
    let shared = gw.live.current();
    match &shared.budget {
        Some(b) => Ok(b.store.clone()),
        None => Err(Box::new(error(StatusCode::NOT_FOUND, "no limit store: pins are not kept".into()))),
    }
}

/// Pinned digests, changed definitions waiting, and the policy's own pins.
async fn tools(State(gw): State<Arc<Gateway>>) -> Response {
    let store = match store(&gw) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let read = async {
        let pinned: BTreeMap<String, String> = store.values(PINS).await?.into_iter().collect();
        let pending: BTreeMap<String, String> =
            store.values(PENDING).await?.into_iter().filter(|(_, d)| !d.is_empty()).collect();
        Ok::<_, crate::limits::StoreError>((pinned, pending))
    };
    match read.await {
        Ok((pinned, pending)) => {
            let policy: BTreeMap<String, String> =
                gw.live.current().policy.mcp.pins.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Json(json!({"pinned": pinned, "pending": pending, "policyPins": policy})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("the limit store cannot be read: {e}")),
    }
}

/// Pin the definition waiting for `tool`.
async fn approve(State(gw): State<Arc<Gateway>>, body: axum::body::Bytes) -> Response {
    let Ok(Approve { tool }) = serde_json::from_slice(&body) else {
        return error(StatusCode::BAD_REQUEST, "send {\"tool\": \"<server>/<tool>\"}".into());
    };
    let shared = gw.live.current();
    if let Some(pin) = shared.policy.mcp.pins.get(&tool) {
        let msg = format!("`{tool}` is pinned by the policy (mcp.pins: {pin}): edit the policy to approve a change");
        return error(StatusCode::CONFLICT, msg);
    }
    let store = match store(&gw) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let waiting = match store.value(PENDING, &tool).await {
        Ok(v) => v.filter(|d| !d.is_empty()),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("the limit store cannot be read: {e}")),
    };
    let Some(digest) = waiting else {
        let msg = format!("no changed definition of `{tool}` waits for approval (`tollgate mcp tools` lists them)");
        return error(StatusCode::NOT_FOUND, msg);
    };
    let previous = store.value(PINS, &tool).await.ok().flatten();
    let written = async {
        store.set_value(PINS, &tool, &digest, false).await?;
        store.set_value(PENDING, &tool, "", false).await
    };
    if let Err(e) = written.await {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("the limit store cannot be written: {e}"));
    }
    gw.listings.clear();
    tracing::info!(%tool, %digest, "mcp: changed tool definition approved");
    if let Some(audit) = &shared.audit {
        let (server, name) = tool.split_once('/').unwrap_or((tool.as_str(), ""));
        let rec = AuditRecord {
            time: rfc3339_millis(std::time::SystemTime::now()),
            request_id: crate::extproc::new_request_id(),
            consumer: "operator".into(),
            api: "mcp.approve".into(),
            requested_model: name.into(),
            model: name.into(),
            provider: server.into(),
            status: 200,
            decisions: json!({"mcp": {"server": server, "tool": name, "approved": digest, "previous": previous}}),
            ..Default::default()
        };
        if let Err(e) = audit.writer.append(rec).await {
            tracing::error!(error = %e, "mcp: the approval is not in the audit log");
        }
    }
    Json(json!({"approved": tool, "digest": digest, "previous": previous})).into_response()
}

/// The admin routes (the caller adds the admin token check).
pub fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/mcp/tools", axum::routing::get(tools))
        .route("/mcp/approve", axum::routing::post(approve))
        .with_state(gateway)
}
