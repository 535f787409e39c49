//! The websocket of the websocket subscription channel (`/ws/subscriptions`): frames in and
//! out; what they mean is `notify::websocket`. The socket is opened without a bearer token
//! (browsers cannot send one); the binding token it sends was issued by
//! `$get-ws-binding-token` to a caller the policy let read those subscriptions.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::api::AppState;
use crate::fhir::access;
use crate::fhir::outcome::{operation_outcome, Issue, IssueCode};
use crate::notify::websocket;

/// Where clients connect, as `$get-ws-binding-token` names it.
pub fn url(base: &str) -> String {
    let origin = base.trim_end_matches('/').trim_end_matches("/fhir");
    let origin = origin
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| origin.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| origin.to_string());
    format!("{origin}/ws/subscriptions")
}

pub async fn subscriptions(
    State(st): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let base = super::rest::base_url(&st, &headers);
    upgrade.on_upgrade(move |socket| access::as_system(serve(st, base, socket)))
}

async fn serve(st: AppState, base: String, mut socket: WebSocket) {
    let sql = st.auth.store.clone();
    let mut bound = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Some(token) = websocket::bind_token(&text) else {
                        continue; // pings and the like
                    };
                    match websocket::bind(&st.fhir, &sql, &token).await {
                        Ok(subs) => {
                            for sub in subs {
                                match websocket::handshake(&st.fhir, &sql, &base, &sub).await {
                                    Ok(b) => {
                                        if socket.send(Message::Text(b.into())).await.is_err() {
                                            return;
                                        }
                                        bound.push(sub);
                                    }
                                    Err(e) => tracing::warn!(error = %e, "websocket handshake failed"),
                                }
                            }
                        }
                        Err(why) => {
                            let oo = operation_outcome(&[Issue::error(IssueCode::Security, why)]);
                            let _ = socket.send(Message::Text(oo.to_string().into())).await;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => {
                for sub in &bound {
                    let out = match websocket::turn(&st.fhir, &sql, &base, sub).await {
                        Ok(Some(out)) => out,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "websocket delivery failed");
                            continue;
                        }
                    };
                    let sent = socket.send(Message::Text(out.text.clone().into())).await.is_ok();
                    if let Err(e) = websocket::done(&sql, sub, out, sent).await {
                        tracing::warn!(error = %e, "recording a websocket delivery failed");
                    }
                    if !sent {
                        return;
                    }
                }
            }
        }
    }
}
