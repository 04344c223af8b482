//! Following the event stream (`GET /v1/events/stream`, Server-Sent
//! Events) from any replica.
//!
//! [`EventStream::next`] yields each event once, in index order. When a
//! connection ends (the replica stopped, a reset, nothing heard for the
//! idle timeout, a 503), it connects to the next replica of the client's
//! list with `Last-Event-ID` = the last event it yielded, so nothing is
//! lost and nothing repeats: every replica holds the same events under the
//! same indices, and one behind the client sends nothing until it has
//! caught up.
//!
//! Timeouts: connecting and the response head have the client's request
//! timeout; the stream itself has none (it is long-lived), but one that
//! stays silent longer than the idle timeout (the server sends a keep-alive
//! comment every 15 s) counts as dead. What one connection buffers is
//! bounded ([`MAX_LINE`]).

use std::time::Duration;

use reqwest::StatusCode;

use crate::client::{AdminClient, ClientError, error_chain};
use crate::views::{EventGap, EventView};

/// Default idle timeout: three keep-alive intervals of the server.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Longest SSE line accepted (an event is a few hundred bytes); a longer
/// one drops the connection.
pub const MAX_LINE: usize = 1 << 20;

/// Which events to follow or list: each field, when set, is a
/// comma-separated list of accepted values; an event passes when it
/// matches every field set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub module: Option<String>,
    pub node: Option<String>,
    pub kind: Option<String>,
}

impl EventFilter {
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("module", &self.module),
            ("node", &self.node),
            ("kind", &self.kind),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// `?k=v&...`, values percent-encoded (empty for no pairs).
pub(crate) fn query_string(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let encode = |v: &str| {
        let mut out = String::new();
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~,".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

/// What the stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    Event(EventView),
    /// Events were dropped from the state before this client read them.
    Gap(EventGap),
}

/// One open stream: its replica, the response, and the bytes of the
/// event being read.
struct Conn {
    addr: String,
    resp: reqwest::Response,
    buf: Vec<u8>,
    event: Option<String>,
    id: Option<u64>,
    data: Option<String>,
}

/// Why a connection ended (it is dropped, and the next replica tried).
type Ended = String;

/// A followed event stream; see the module documentation.
pub struct EventStream {
    client: AdminClient,
    filter: EventFilter,
    /// The last event index yielded (or the starting point).
    position: u64,
    /// The replica to try next (index into the client's addresses).
    next_addr: usize,
    conn: Option<Conn>,
    idle: Duration,
    /// Connections that ended (`<addr>: <why>; resuming after event N`),
    /// oldest first; the caller may drain it.
    pub reconnects: Vec<String>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("position", &self.position)
            .field("connected_to", &self.connected_to())
            .finish()
    }
}

impl EventStream {
    pub(crate) fn new(client: AdminClient, after: u64, filter: EventFilter) -> EventStream {
        EventStream {
            client,
            filter,
            position: after,
            next_addr: 0,
            conn: None,
            idle: IDLE_TIMEOUT,
            reconnects: Vec::new(),
        }
    }

    /// A connection silent for longer than `idle` is given up.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The last event index yielded (or the starting point).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The replica the stream reads from now.
    pub fn connected_to(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| c.addr.as_str())
    }

    /// The next event (or gap). Reconnects on its own; an error when no
    /// replica could be reached in one round (call again to retry) or a
    /// replica refused the request (a bad filter, a missing token).
    pub async fn next(&mut self) -> Result<StreamItem, ClientError> {
        loop {
            if self.conn.is_none() {
                self.connect().await?;
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match read_item(conn, self.idle).await {
                Ok(item) => {
                    match &item {
                        StreamItem::Event(e) => self.position = e.index,
                        StreamItem::Gap(g) => self.position = g.first_kept.saturating_sub(1),
                    }
                    return Ok(item);
                }
                Err(why) => {
                    let addr = conn.addr.clone();
                    self.conn = None;
                    self.reconnects.push(format!(
                        "{addr}: {why}; resuming after event {}",
                        self.position
                    ));
                }
            }
        }
    }

    /// Opens the stream on the first replica that answers, from
    /// `next_addr` on, once round the list.
    async fn connect(&mut self) -> Result<(), ClientError> {
        let addrs = self.client.addrs.clone();
        if addrs.is_empty() {
            return Err(ClientError::Unreachable("no supervisor address".into()));
        }
        let mut unreachable = Vec::new();
        for k in 0..addrs.len() {
            let i = (self.next_addr + k) % addrs.len();
            let addr = &addrs[i];
            let query = query_string(&self.filter.pairs());
            let url = format!("{}://{addr}/v1/events/stream{query}", self.client.scheme);
            let mut req = self
                .client
                .http
                .get(&url)
                .header("Last-Event-ID", self.position.to_string())
                .header(reqwest::header::ACCEPT, "text/event-stream");
            if let Some(t) = &self.client.token {
                req = req.bearer_auth(t);
            }
            let resp = match tokio::time::timeout(self.client.timeout, req.send()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    unreachable.push(format!("{addr}: {}", error_chain(&e)));
                    continue;
                }
                Err(_) => {
                    unreachable.push(format!(
                        "{addr}: no answer within {:?}",
                        self.client.timeout
                    ));
                    continue;
                }
            };
            let status = resp.status();
            if !status.is_success() {
                let bytes = tokio::time::timeout(self.client.timeout, resp.bytes())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let message = serde_json::from_slice::<proto::ErrorBody>(&bytes)
                    .map(|b| b.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    unreachable.push(format!("{addr}: {message}"));
                    continue;
                }
                return Err(ClientError::Api { status, message });
            }
            // After this one ends, the next replica.
            self.next_addr = (i + 1) % addrs.len();
            self.conn = Some(Conn {
                addr: addr.clone(),
                resp,
                buf: Vec::new(),
                event: None,
                id: None,
                data: None,
            });
            return Ok(());
        }
        Err(ClientError::Unreachable(unreachable.join("; ")))
    }
}

/// Reads lines until one event is complete.
async fn read_item(conn: &mut Conn, idle: Duration) -> Result<StreamItem, Ended> {
    loop {
        while let Some(nl) = conn.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = conn.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| "a line is not UTF-8".to_string())?;
            if let Some(item) = take_line(conn, &line)? {
                return Ok(item);
            }
        }
        if conn.buf.len() > MAX_LINE {
            return Err(format!("a line longer than {MAX_LINE} bytes"));
        }
        match tokio::time::timeout(idle, conn.resp.chunk()).await {
            Ok(Ok(Some(bytes))) => conn.buf.extend_from_slice(&bytes),
            Ok(Ok(None)) => return Err("the stream ended".into()),
            Ok(Err(e)) => return Err(error_chain(&e)),
            Err(_) => return Err(format!("nothing received for {idle:?}")),
        }
    }
}

/// One SSE line; an event when the line ends one.
fn take_line(conn: &mut Conn, line: &str) -> Result<Option<StreamItem>, Ended> {
    if line.is_empty() {
        let (event, id, data) = (conn.event.take(), conn.id.take(), conn.data.take());
        let Some(data) = data else {
            return Ok(None);
        };
        let item = match event.as_deref() {
            Some("gap") => StreamItem::Gap(
                serde_json::from_str(&data).map_err(|e| format!("a gap event: {e}: {data}"))?,
            ),
            None | Some("message") => {
                let e: EventView =
                    serde_json::from_str(&data).map_err(|e| format!("an event: {e}: {data}"))?;
                if id.is_some_and(|id| id != e.index) {
                    return Err(format!("event {} came with id {id:?}", e.index));
                }
                StreamItem::Event(e)
            }
            // A kind of message this client does not know: skipped.
            Some(_) => return Ok(None),
        };
        return Ok(Some(item));
    }
    if line.starts_with(':') {
        return Ok(None); // a comment: the keep-alive
    }
    let (field, value) = line.split_once(':').unwrap_or((line, ""));
    let value = value.strip_prefix(' ').unwrap_or(value);
    match field {
        "event" => conn.event = Some(value.to_string()),
        "id" => conn.id = value.parse().ok(),
        "data" => match &mut conn.data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => conn.data = Some(value.to_string()),
        },
        _ => {}
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_encoded() {
        assert_eq!(query_string(&[]), "");
        let f = EventFilter {
            module: Some("web".into()),
            node: None,
            kind: Some("restored,placed".into()),
        };
        assert_eq!(query_string(&f.pairs()), "?module=web&kind=restored,placed");
        assert_eq!(
            query_string(&[("module", "a b&c".into())]),
            "?module=a%20b%26c"
        );
    }
}
