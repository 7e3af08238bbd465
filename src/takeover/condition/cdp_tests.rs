//! One poll against a fake browser over a real CDP WebSocket: what `sight` reads and how it
//! takes a browser context that closes in the middle of a poll.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// A cookie as Chromium reports it in `Network.Cookie`.
fn cdp_cookie(name: &str, value: &str) -> Value {
    json!({
        "name": name, "value": value, "domain": "bank.example", "path": "/",
        "expires": -1, "size": name.len() + value.len(), "httpOnly": true, "secure": true,
        "session": true, "priority": "Medium", "sourceScheme": "Secure", "sourcePort": 443,
    })
}

/// How the fake answers `Storage.getCookies` for one context (`""`: the default one).
type Cookies = dyn Fn(&str) -> Result<Value, Value> + Send + Sync;

/// A browser with the default context and the contexts of `listings`: the n-th
/// `Target.getBrowserContexts` answers `listings[n]` (the last one from then on).
/// Returns its WebSocket URL.
async fn fake_browser(listings: Vec<Vec<&'static str>>, cookies: Arc<Cookies>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let listed = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (listings, cookies, listed) = (listings.clone(), cookies.clone(), listed.clone());
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let request: Value = serde_json::from_str(&text).expect("a CDP request");
                    let answer = match request["method"].as_str().unwrap_or_default() {
                        "Target.getBrowserContexts" => {
                            let n = listed.fetch_add(1, Ordering::SeqCst);
                            let ids = &listings[n.min(listings.len() - 1)];
                            Ok(json!({"browserContextIds": ids}))
                        }
                        "Storage.getCookies" => cookies(
                            request["params"]["browserContextId"]
                                .as_str()
                                .unwrap_or_default(),
                        )
                        .map(|list| json!({"cookies": list})),
                        // Target.setDiscoverTargets, which chromiumoxide sends on connect.
                        _ => Ok(json!({})),
                    };
                    let mut reply = json!({"id": request["id"]});
                    match answer {
                        Ok(result) => reply["result"] = result,
                        Err(error) => reply["error"] = error,
                    }
                    if ws.send(Message::text(reply.to_string())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("ws://{addr}/devtools/browser/fake")
}

/// What Chromium answers for a browser context that no longer exists.
fn no_such_context(id: &str) -> Value {
    json!({"code": -32602, "message": format!("Failed to find browser context for id {id}")})
}

/// A cookie condition: `session` on `bank.example` (the unit tests in `condition` use it too).
pub(super) fn session_condition() -> SuccessCondition {
    SuccessCondition {
        url_pattern: None,
        cookie: Some(CookieCondition {
            name: "session".into(),
            domain: "bank.example".into(),
        }),
    }
}

/// Context `GONE` is listed, then closed before its cookies are read: the poll still
/// succeeds, with the cookies of the contexts that are left (the login in `CTX1` among
/// them), where the whole poll used to fail.
#[tokio::test]
async fn a_context_closed_during_the_poll_is_skipped() {
    let cookies: Arc<Cookies> = Arc::new(|context| match context {
        "" => Ok(json!([cdp_cookie("session", "anon")])),
        "CTX1" => Ok(json!([cdp_cookie("session", "user-42")])),
        other => Err(no_such_context(other)),
    });
    let url = fake_browser(vec![vec!["GONE", "CTX1"], vec!["CTX1"]], cookies).await;
    let cdp = connect(&url).await.expect("connect");
    let condition = session_condition();
    let seen = sight(&cdp, &condition, &[7; 16]).await.expect("the poll");
    let mut contexts: Vec<&str> = seen.cookies.keys().map(|k| k.context.as_str()).collect();
    contexts.sort_unstable();
    assert_eq!(contexts, ["", "CTX1"]);
}

/// Chromium's partitioned cookies (CHIPS) are read with their partition: one cookie per
/// partition, and neither is the unpartitioned one.
#[tokio::test]
async fn partitioned_cookies_are_read_with_their_partition() {
    let cookies: Arc<Cookies> = Arc::new(|_| {
        let mut shop = cdp_cookie("session", "a");
        shop["partitionKey"] =
            json!({"topLevelSite": "https://shop.example", "hasCrossSiteAncestor": false});
        let mut news = cdp_cookie("session", "b");
        news["partitionKey"] =
            json!({"topLevelSite": "https://news.example", "hasCrossSiteAncestor": true});
        let mut opaque = cdp_cookie("session", "c");
        opaque["partitionKeyOpaque"] = json!(true);
        Ok(json!([cdp_cookie("session", "d"), shop, news, opaque]))
    });
    let url = fake_browser(vec![vec![]], cookies).await;
    let cdp = connect(&url).await.expect("connect");
    let seen = sight(&cdp, &session_condition(), &[7; 16])
        .await
        .expect("the poll");
    let mut partitions: Vec<Partition> = seen.cookies.keys().map(|k| k.partition.clone()).collect();
    partitions.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(
        partitions,
        [
            Partition::None,
            Partition::Opaque,
            Partition::Site {
                top_level_site: "https://news.example".into(),
                cross_site_ancestor: true
            },
            Partition::Site {
                top_level_site: "https://shop.example".into(),
                cross_site_ancestor: false
            },
        ]
    );
}

/// A context still listed whose cookies cannot be read is a failed poll, as is the
/// default context failing: nothing is skipped that could hold the login.
#[tokio::test]
async fn a_context_still_there_that_fails_fails_the_poll() {
    let cookies: Arc<Cookies> = Arc::new(|context| match context {
        "" => Ok(json!([])),
        _ => Err(json!({"code": -32000, "message": "storage partition unavailable"})),
    });
    let url = fake_browser(vec![vec!["CTX1"]], cookies).await;
    let cdp = connect(&url).await.expect("connect");
    let got = sight(&cdp, &session_condition(), &[7; 16]).await;
    assert!(matches!(got, Err(PollError::Cdp(_))), "{got:?}");

    let cookies: Arc<Cookies> = Arc::new(|context| match context {
        "" => Err(json!({"code": -32000, "message": "no default context"})),
        _ => Ok(json!([])),
    });
    let url = fake_browser(vec![vec![]], cookies).await;
    let cdp = connect(&url).await.expect("connect");
    let got = sight(&cdp, &session_condition(), &[7; 16]).await;
    assert!(matches!(got, Err(PollError::Cdp(_))), "{got:?}");
}
