//! The event record, read two ways:
//!
//! - `GET /v1/events?after=&limit=&module=&node=&kind=` (a JSON list, in
//!   [`super::admin`], through [`FilterQuery`] and [`list`]);
//! - `GET /v1/events/stream?after=&module=&node=&kind=`: Server-Sent
//!   Events ([`stream`]), `id:` = the event index, resuming after the
//!   `Last-Event-ID` header (or `after`).
//!
//! ## Data flow of the stream
//! ```text
//!  apply (raft-store) ──► StateHandle::subscribe (watch of the applied index)
//!                                   │ wakes
//!  Follow::fill: read the applied state after `cursor`, at most BATCH
//!  matching events (SCAN examined) ──► ready ──► hyper, as the client reads
//! ```
//!
//! ## Invariants
//! - Served by every replica from its own applied state, never forwarded:
//!   event indices are the same on every replica (the events are part of
//!   the replicated state), so a client can resume on any replica after
//!   the last id it saw and gets each event once, in order. A replica
//!   behind the client's resume point sends nothing until it has caught up.
//! - Woken by the state machine's notification, never by a timer (the
//!   keep-alive comments aside).
//! - Bounded: at most [`BATCH`] events wait per client; the next ones are
//!   read from the state only when the client has taken those (hyper
//!   stops polling the stream while the socket is full). A client so slow
//!   that the events after its position were dropped from the state
//!   (the state keeps the newest 10,000) gets an `event: gap` naming what
//!   it missed, then goes on from the oldest event kept.
//! - At most [`MAX_STREAMS`] streams at once per replica (503 beyond):
//!   each holds a connection of the listener.
//! - The stream ends when the replica shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::middleware;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::watch;

use super::{ApiError, ApiResult, Params, auth};
use crate::app::App;
use crate::state::{ClusterState, Event, EventKind};
use crate::views::{self, EventGap, EventView};

/// Most events waiting to be sent to one stream client.
pub const BATCH: usize = 256;
/// Most events examined per read of the state (filters may match none).
pub const SCAN: usize = 4096;
/// A comment line is sent after this long without an event, so clients
/// and proxies can tell a quiet stream from a dead one.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most streams one replica serves at once: each holds one of the
/// listener's connections (1024, shared with heartbeats and Raft), so a
/// flood of stream clients must not take them all; beyond it, 503.
pub const MAX_STREAMS: usize = 256;

/// Streams open now (one replica per process).
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Event streams open on this replica now (`supervisor_event_streams`).
pub fn open_streams() -> usize {
    STREAMS.load(Ordering::Relaxed)
}

/// One of the [`MAX_STREAMS`] slots, given back when the stream ends.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<StreamSlot> {
        STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The stream route, behind the admin API's authorization; not behind
/// forwarding (every replica serves it from its own state).
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/v1/events/stream", get(stream))
        .layer(middleware::from_fn_with_state(app.clone(), auth::admin))
}

/// Which events a reader wants: each given list is a set of accepted
/// values (comma-separated in the query); an event passes when it matches
/// every list given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub modules: Option<Vec<String>>,
    pub nodes: Option<Vec<String>>,
    pub kinds: Option<Vec<EventKind>>,
}

fn list_of(v: Option<&str>) -> Option<Vec<String>> {
    let v = v?;
    let items: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (!items.is_empty()).then_some(items)
}

impl Filter {
    /// From the `module`, `node` and `kind` parameters; an unknown kind is
    /// a 400 naming it and the known ones.
    pub fn parse(module: Option<&str>, node: Option<&str>, kind: Option<&str>) -> ApiResult<Self> {
        let kinds = match list_of(kind) {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|k| {
                        EventKind::from_str(k).map_err(|_| {
                            let known: Vec<&str> =
                                EventKind::ALL.iter().map(|k| k.as_str()).collect();
                            ApiError::bad(format!(
                                "kind: unknown event kind {k:?}; known kinds: {}",
                                known.join(", ")
                            ))
                        })
                    })
                    .collect::<ApiResult<Vec<_>>>()?,
            ),
        };
        Ok(Filter {
            modules: list_of(module),
            nodes: list_of(node),
            kinds,
        })
    }

    pub fn matches(&self, e: &Event) -> bool {
        let has = |list: &Option<Vec<String>>, v: &Option<String>| match list {
            None => true,
            Some(list) => v.as_ref().is_some_and(|v| list.iter().any(|x| x == v)),
        };
        has(&self.modules, &e.module)
            && has(&self.nodes, &e.node)
            && self.kinds.as_ref().is_none_or(|k| k.contains(&e.kind))
    }
}

/// The filter parameters of `GET /v1/events` (its `after`, `limit` and
/// `stale` are the admin API's read options).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilterQuery {
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
}

impl FilterQuery {
    pub fn parse(&self) -> ApiResult<Filter> {
        Filter::parse(
            self.module.as_deref(),
            self.node.as_deref(),
            self.kind.as_deref(),
        )
    }
}

/// Position in `events` of the first event with an index above `after`
/// (event indices are consecutive within the kept events).
pub(crate) fn first_after(s: &ClusterState, after: u64) -> usize {
    match s.events.front() {
        None => 0,
        Some(front) if after < front.index => 0,
        Some(front) => ((after - front.index + 1) as usize).min(s.events.len()),
    }
}

/// The kept events with an index above `after`, oldest first (found in
/// O(log n), not by skipping the ones before).
pub(crate) fn events_after(s: &ClusterState, after: u64) -> impl Iterator<Item = &Event> {
    s.events.focus().narrow(first_after(s, after)..).into_iter()
}

/// `GET /v1/events`: with `after`, the first `limit` matching events with
/// a higher index; without it, the newest `limit` matching events. Oldest
/// first either way.
pub fn list(s: &ClusterState, after: Option<u64>, limit: usize, filter: &Filter) -> Vec<EventView> {
    match after {
        Some(after) => events_after(s, after)
            .filter(|e| filter.matches(e))
            .take(limit)
            .map(views::event)
            .collect(),
        None => {
            let mut newest: Vec<EventView> = s
                .events
                .iter()
                .rev()
                .filter(|e| filter.matches(e))
                .take(limit)
                .map(views::event)
                .collect();
            newest.reverse();
            newest
        }
    }
}

/// The query of `GET /v1/events/stream`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    #[serde(default)]
    pub after: Option<u64>,
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
}

/// What a stream client is sent next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Gap(EventGap),
    Event(Event),
}

impl Item {
    fn sse(&self) -> SseEvent {
        match self {
            Item::Gap(gap) => SseEvent::default()
                .event("gap")
                .id(gap.first_kept.saturating_sub(1).to_string())
                .data(serde_json::to_string(gap).unwrap_or_default()),
            Item::Event(e) => SseEvent::default()
                .id(e.index.to_string())
                .data(serde_json::to_string(&views::event(e)).unwrap_or_default()),
        }
    }
}

/// Reads `s` after `cursor`: a gap when events after it were dropped,
/// then up to [`BATCH`] matching events (in all, `ready` holds at most
/// that many) among at most [`SCAN`]. Advances `cursor` over everything
/// examined. Pure.
fn fill(s: &ClusterState, cursor: &mut u64, filter: &Filter, ready: &mut VecDeque<Item>) {
    let (Some(front), Some(back)) = (s.events.front(), s.events.back()) else {
        return;
    };
    if *cursor >= back.index || ready.len() >= BATCH {
        return;
    }
    if front.index > *cursor + 1 {
        ready.push_back(Item::Gap(EventGap {
            after: *cursor,
            first_kept: front.index,
            missed: front.index - *cursor - 1,
        }));
        *cursor = front.index - 1;
    }
    for e in events_after(s, *cursor).take(SCAN) {
        if ready.len() >= BATCH {
            break;
        }
        *cursor = e.index;
        if filter.matches(e) {
            ready.push_back(Item::Event(e.clone()));
        }
    }
}

/// One stream client's position in the event record.
struct Follow {
    app: Arc<App>,
    applied: watch::Receiver<u64>,
    /// The last event index examined (sent, filtered out, or reported lost).
    cursor: u64,
    filter: Filter,
    ready: VecDeque<Item>,
    /// Held for as long as the stream lives.
    _slot: StreamSlot,
}

impl Follow {
    /// The next SSE event, waiting for the state machine when there is
    /// none yet; `None` when the replica shuts down.
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Follow)> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some((Ok(item.sse()), self));
            }
            // Seen before reading: an apply after this read wakes us.
            self.applied.borrow_and_update();
            let before = self.cursor;
            let (cursor, filter, ready) = (&mut self.cursor, &self.filter, &mut self.ready);
            self.app.state.read(|s| fill(s, cursor, filter, ready));
            if !self.ready.is_empty() || self.cursor != before {
                continue;
            }
            tokio::select! {
                _ = self.app.cancel.cancelled() => return None,
                changed = self.applied.changed() => if changed.is_err() { return None },
            }
        }
    }
}

/// Where a stream starts: after `Last-Event-ID` when the client sends one
/// (a reconnecting client), else after `after`, else after the newest
/// event (new events only).
fn resume_point(headers: &HeaderMap, q: &StreamQuery, app: &App) -> ApiResult<u64> {
    if let Some(v) = headers.get("last-event-id") {
        let text = v.to_str().unwrap_or_default().trim();
        // An empty header is how EventSource says "none".
        if !text.is_empty() {
            return text.parse().map_err(|_| {
                ApiError::bad(format!(
                    "Last-Event-ID {text:?} is not an event index (a number)"
                ))
            });
        }
    }
    Ok(match q.after {
        Some(after) => after,
        None => app.state.read(|s| s.next_event),
    })
}

/// `GET /v1/events/stream`: see the module documentation.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event index")),
    responses(
        (status = 200, description = "Server-Sent Events: `id:` the event index, `data:` the event as JSON; `event: gap` when events rolled off before they could be read", content_type = "text/event-stream", body = String),
        (status = 400, description = "an unknown event kind"),
        (status = 401, description = "no credentials"),
        (status = 503, description = "this replica serves the most streams it allows"),
    )
)]
pub async fn stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Params(q): Params<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let filter = Filter::parse(q.module.as_deref(), q.node.as_deref(), q.kind.as_deref())?;
    let slot = StreamSlot::take().ok_or_else(|| {
        ApiError::unavailable(format!(
            "this replica serves {MAX_STREAMS} event streams already; try another replica or later"
        ))
    })?;
    // Subscribed before the resume point is read: nothing falls between.
    let applied = app.state.subscribe();
    let cursor = resume_point(&headers, &q, &app)?;
    let follow = Follow {
        app,
        applied,
        cursor,
        filter,
        ready: VecDeque::new(),
        _slot: slot,
    };
    let events = futures::stream::unfold(follow, Follow::next);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(index: u64, kind: EventKind, module: Option<&str>, node: Option<&str>) -> Event {
        Event {
            index,
            log_index: index,
            at_ms: 0,
            kind,
            module: module.map(str::to_string),
            node: node.map(str::to_string),
            detail: Default::default(),
            cause: None,
        }
    }

    fn state(first: u64, n: u64) -> ClusterState {
        let mut s = ClusterState::default();
        for i in first..first + n {
            let module = format!("m{}", i % 3);
            let node = if i % 2 == 0 { "a" } else { "b" };
            let kind = if i % 5 == 0 {
                EventKind::Restored
            } else {
                EventKind::ModuleDeployed
            };
            s.events
                .push_back(event(i, kind, Some(&module), Some(node)));
        }
        s.next_event = first + n - 1;
        s
    }

    fn indices(ready: &VecDeque<Item>) -> Vec<u64> {
        ready
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e.index),
                Item::Gap(_) => None,
            })
            .collect()
    }

    /// Resuming anywhere yields every later event once, in order; a
    /// position whose successors were dropped yields a gap naming them,
    /// then the oldest kept; one beyond the newest yields nothing yet.
    #[test]
    fn fill_resumes_reports_gaps_and_stays_bounded() {
        let s = state(101, 50); // events 101..=150
        let all = Filter::default();
        let (mut cursor, mut ready) = (120, VecDeque::new());
        fill(&s, &mut cursor, &all, &mut ready);
        assert_eq!(indices(&ready), (121..=150).collect::<Vec<_>>());
        assert_eq!(cursor, 150);
        ready.clear();
        fill(&s, &mut cursor, &all, &mut ready);
        assert!(ready.is_empty(), "nothing new");

        let (mut cursor, mut ready) = (90, VecDeque::new());
        fill(&s, &mut cursor, &all, &mut ready);
        assert_eq!(
            ready.front(),
            Some(&Item::Gap(EventGap {
                after: 90,
                first_kept: 101,
                missed: 10
            }))
        );
        assert_eq!(indices(&ready), (101..=150).collect::<Vec<_>>());

        let (mut cursor, mut ready) = (200, VecDeque::new());
        fill(&s, &mut cursor, &all, &mut ready);
        assert!(ready.is_empty());
        assert_eq!(cursor, 200, "a replica behind the client waits");

        // Filtered: the cursor passes over what does not match.
        let restored = Filter::parse(None, None, Some("restored")).expect("filter");
        let (mut cursor, mut ready) = (100, VecDeque::new());
        fill(&s, &mut cursor, &restored, &mut ready);
        assert_eq!(
            indices(&ready),
            vec![105, 110, 115, 120, 125, 130, 135, 140, 145, 150]
        );
        assert_eq!(cursor, 150);

        // Bounded: at most BATCH wait, the rest on the next read.
        let big = state(1, 3 * BATCH as u64);
        let (mut cursor, mut ready) = (0, VecDeque::new());
        fill(&big, &mut cursor, &all, &mut ready);
        assert_eq!(ready.len(), BATCH);
        fill(&big, &mut cursor, &all, &mut ready);
        assert_eq!(
            ready.len(),
            BATCH,
            "nothing added while the client has not read"
        );
        ready.clear();
        fill(&big, &mut cursor, &all, &mut ready);
        assert_eq!(indices(&ready).first(), Some(&(BATCH as u64 + 1)));
    }

    /// A replica serves at most MAX_STREAMS streams; a slot comes back
    /// when its stream ends.
    #[test]
    fn streams_are_capped() {
        let slots: Vec<StreamSlot> = (0..MAX_STREAMS)
            .map(|_| StreamSlot::take().expect("a slot"))
            .collect();
        assert!(StreamSlot::take().is_none());
        assert_eq!(open_streams(), MAX_STREAMS);
        drop(slots);
        assert_eq!(open_streams(), 0);
        assert!(StreamSlot::take().is_some());
        assert_eq!(open_streams(), 0);
    }

    #[test]
    fn filters_match_every_list_given() {
        let f = Filter::parse(Some("m1,m2"), Some("a"), Some("restored")).expect("filter");
        assert!(f.matches(&event(1, EventKind::Restored, Some("m2"), Some("a"))));
        assert!(!f.matches(&event(1, EventKind::Restored, Some("m0"), Some("a"))));
        assert!(!f.matches(&event(1, EventKind::Restored, Some("m1"), Some("b"))));
        assert!(!f.matches(&event(1, EventKind::Placed, Some("m1"), Some("a"))));
        assert!(!f.matches(&event(1, EventKind::Restored, None, Some("a"))));
        assert!(Filter::default().matches(&event(1, EventKind::Placed, None, None)));
        let e = Filter::parse(None, None, Some("restored,nope")).unwrap_err();
        assert!(e.message.contains("\"nope\"") && e.message.contains("restored"));
    }

    #[test]
    fn list_is_newest_without_after_and_oldest_after_it() {
        let s = state(101, 50); // events 101..=150
        let all = Filter::default();
        let idx = |v: Vec<EventView>| v.iter().map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(idx(list(&s, None, 3, &all)), vec![148, 149, 150]);
        assert_eq!(idx(list(&s, Some(0), 3, &all)), vec![101, 102, 103]);
        assert_eq!(idx(list(&s, Some(120), 2, &all)), vec![121, 122]);
        assert!(list(&s, Some(150), 10, &all).is_empty());
        assert!(list(&s, Some(999), 10, &all).is_empty());
        let restored = Filter::parse(None, None, Some("restored")).expect("filter");
        assert_eq!(idx(list(&s, None, 2, &restored)), vec![145, 150]);
        assert_eq!(idx(list(&s, Some(101), 2, &restored)), vec![105, 110]);
        let m1_on_a = Filter::parse(Some("m1"), Some("a"), None).expect("filter");
        assert!(
            list(&s, Some(0), 100, &m1_on_a)
                .iter()
                .all(|e| e.module.as_deref() == Some("m1") && e.node.as_deref() == Some("a"))
        );
    }
}
