//! The event bus behind `GET /events` (Server-Sent Events).
//!
//! Every change the status store records (a build queued, started, in a
//! new phase, finished; a poll; the queue; a reload) and every control
//! action ([`EventBus::publish_control`]) becomes one [`Event`]: a kind,
//! one line of JSON and an id. Ids are integers that increase strictly,
//! also across restarts (the first id of a daemon is its start time in
//! milliseconds times 1000), so an id a client saw before a restart is
//! always older than everything after it.
//!
//! The bus keeps the last [`RING`] events for clients that reconnect with
//! `Last-Event-ID`; a client that fell further behind gets a `resync`
//! event instead (fetch `/status` again). Live events fan out through a
//! bounded `broadcast` channel: a subscriber that does not keep up skips
//! ahead (and is sent `resync`) instead of being buffered for, and one
//! whose connection takes nothing for [`STALL`] is dropped. At most
//! `[http].max_event_clients` subscribe at once; a slot is freed when its
//! stream ends (the connection closed, at the latest at the next
//! keep-alive comment, sent every [`KEEPALIVE`]). An idle subscriber is a
//! parked task: it costs a timer wake-up every [`KEEPALIVE`] and nothing
//! else.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::model::build::{BuildState, Phase, Trigger};

/// Recent events kept for `Last-Event-ID` resumption.
pub const RING: usize = 1024;
/// Live events a subscriber may be behind before it skips ahead.
pub const FANOUT: usize = 256;
/// A comment line is sent this often so proxies keep the stream open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// A subscriber whose connection takes nothing for this long is dropped.
pub const STALL: Duration = Duration::from_secs(30);
/// Frames a subscriber's stream holds before its connection takes them.
const QUEUED_FRAMES: usize = 8;

/// The `event:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A build was queued, started, entered a phase or finished.
    Build,
    /// A poll ended.
    Poll,
    /// The queue changed.
    Queue,
    /// An operator acted (section 15 of the design).
    Control,
    /// The recipes were reloaded.
    Reload,
    /// The client missed events: fetch `/status` again.
    Resync,
}

impl EventKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Build => "build",
            EventKind::Poll => "poll",
            EventKind::Queue => "queue",
            EventKind::Control => "control",
            EventKind::Reload => "reload",
            EventKind::Resync => "resync",
        }
    }
}

/// One event.
#[derive(Debug, PartialEq)]
pub struct Event {
    /// Its id.
    pub id: u64,
    /// Its kind.
    pub kind: EventKind,
    /// One line of JSON.
    pub data: String,
}

impl Event {
    /// The event as the stream sends it.
    pub fn frame(&self) -> Bytes {
        Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id,
            self.kind.as_str(),
            self.data
        ))
    }
}

/// A `build` event's data.
#[derive(Debug, Clone, Serialize)]
pub struct BuildEvent<'a> {
    /// `queued`, `started`, `phase` or `finished`.
    pub kind: &'static str,
    /// The recipe.
    pub recipe: &'a str,
    /// The version.
    pub version: &'a str,
    /// The tag.
    pub tag: &'a str,
    /// The build id; absent while queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<u64>,
    /// poll or webhook.
    pub trigger: Trigger,
    /// The phase entered (`phase`), or the phase it ended in (`finished`,
    /// when it failed or was cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// How it ended (`finished`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<BuildState>,
    /// Seconds it took (`finished`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// What went wrong (`finished`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
struct Resync {
    reason: &'static str,
}

struct Ring {
    last_id: u64,
    events: VecDeque<Arc<Event>>,
}

/// The event bus (see the module documentation).
pub struct EventBus {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
    slots: Arc<Semaphore>,
    max_clients: usize,
}

/// Every subscriber slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many event subscribers (at most {0})")]
pub struct Full(pub usize);

/// One subscriber, until its stream ends.
pub struct Subscription {
    /// What to send first: missed events, or a `resync`.
    backlog: Vec<Arc<Event>>,
    rx: broadcast::Receiver<Arc<Event>>,
    last: u64,
    _slot: OwnedSemaphorePermit,
}

impl EventBus {
    /// A bus admitting `max_clients` subscribers at once.
    pub fn new(max_clients: usize) -> EventBus {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        EventBus::starting_at(max_clients, now.as_millis() as u64 * 1000)
    }

    /// A bus whose first event gets id `first_id + 1`.
    pub fn starting_at(max_clients: usize, first_id: u64) -> EventBus {
        EventBus {
            ring: Mutex::new(Ring {
                last_id: first_id,
                events: VecDeque::with_capacity(RING),
            }),
            tx: broadcast::Sender::new(FANOUT),
            slots: Arc::new(Semaphore::new(max_clients)),
            max_clients,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends one event of `kind` with `data` as its JSON.
    pub fn publish<T: Serialize + ?Sized>(&self, kind: EventKind, data: &T) {
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        let mut ring = self.lock();
        ring.last_id += 1;
        let ev = Arc::new(Event {
            id: ring.last_id,
            kind,
            data,
        });
        if ring.events.len() == RING {
            ring.events.pop_front();
        }
        ring.events.push_back(ev.clone());
        // Sent under the ring's lock, so a new subscriber's backlog and
        // its live events neither overlap nor leave a gap.
        let _ = self.tx.send(ev);
    }

    /// Sends a `control` event: the hook of the control actions.
    pub fn publish_control(&self, ev: &crate::model::control::ControlEvent) {
        self.publish(EventKind::Control, ev);
    }

    /// The id of the newest event.
    pub fn last_id(&self) -> u64 {
        self.lock().last_id
    }

    /// Subscribers now.
    pub fn clients(&self) -> usize {
        self.max_clients - self.slots.available_permits()
    }

    /// A new subscriber that saw events up to `last_event_id` (the
    /// `Last-Event-ID` header: `None` for a first connection).
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Result<Subscription, Full> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full(self.max_clients))?;
        let ring = self.lock();
        let rx = self.tx.subscribe();
        let oldest = ring.events.front().map_or(ring.last_id + 1, |e| e.id);
        let backlog = match last_event_id.map(|s| s.trim().parse::<u64>()) {
            None => Vec::new(),
            Some(Ok(seen)) if seen == ring.last_id => Vec::new(),
            Some(Ok(seen)) if seen < ring.last_id && seen + 1 >= oldest => ring
                .events
                .iter()
                .filter(|e| e.id > seen)
                .cloned()
                .collect(),
            // Older than the ring, from another run of the daemon, or not
            // an id at all.
            Some(_) => vec![resync(ring.last_id, "missed events are no longer kept")],
        };
        Ok(Subscription {
            backlog,
            rx,
            last: ring.last_id,
            _slot: slot,
        })
    }

    /// Skips a lagging receiver to the newest event: a fresh receiver and
    /// a `resync` carrying the newest id.
    fn skip_ahead(&self) -> (broadcast::Receiver<Arc<Event>>, Arc<Event>) {
        let ring = self.lock();
        (
            self.tx.subscribe(),
            resync(ring.last_id, "the client fell behind"),
        )
    }
}

fn resync(id: u64, reason: &'static str) -> Arc<Event> {
    Arc::new(Event {
        id,
        kind: EventKind::Resync,
        data: serde_json::to_string(&Resync { reason }).unwrap_or_default(),
    })
}

/// The first frame of every stream: a comment, so headers and the
/// connection are confirmed at once, and the reconnection delay.
const HELLO: &[u8] = b"retry: 2000\n: farmhand events\n\n";
const KEEPALIVE_FRAME: &[u8] = b": keep-alive\n\n";

/// The body of an event stream.
pub struct EventStream(mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts streaming `sub` from `bus` until the client goes, stalls for
/// [`STALL`], or `cancel`.
pub fn stream(bus: Arc<EventBus>, sub: Subscription, cancel: CancellationToken) -> EventStream {
    stream_with(bus, sub, cancel, KEEPALIVE, STALL)
}

fn stream_with(
    bus: Arc<EventBus>,
    sub: Subscription,
    cancel: CancellationToken,
    keepalive: Duration,
    stall: Duration,
) -> EventStream {
    let (tx, rx) = mpsc::channel(QUEUED_FRAMES);
    tokio::spawn(run(bus, sub, tx, cancel, keepalive, stall));
    EventStream(rx)
}

async fn run(
    bus: Arc<EventBus>,
    mut sub: Subscription,
    tx: mpsc::Sender<Bytes>,
    cancel: CancellationToken,
    keepalive: Duration,
    stall: Duration,
) {
    let deliver = |frame: Bytes| {
        let tx = tx.clone();
        async move { tx.send_timeout(frame, stall).await.is_ok() }
    };
    if !deliver(Bytes::from_static(HELLO)).await {
        return;
    }
    for ev in std::mem::take(&mut sub.backlog) {
        if !deliver(ev.frame()).await {
            return;
        }
    }
    let start = tokio::time::Instant::now() + keepalive;
    let mut ticks = tokio::time::interval_at(start, keepalive);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tx.closed() => return,
            _ = ticks.tick() => Bytes::from_static(KEEPALIVE_FRAME),
            r = sub.rx.recv() => match r {
                Ok(ev) if ev.id > sub.last => {
                    sub.last = ev.id;
                    ev.frame()
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let (rx, ev) = bus.skip_ahead();
                    sub.rx = rx;
                    sub.last = ev.id;
                    ev.frame()
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !deliver(frame).await {
            // The connection took nothing for `stall`: drop the subscriber
            // (its slot and its place in the fan-out go with it).
            return;
        }
        ticks.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn ids(sub: &Subscription) -> Vec<(u64, EventKind)> {
        sub.backlog.iter().map(|e| (e.id, e.kind)).collect()
    }

    #[test]
    fn frames_are_sse() {
        let ev = Event {
            id: 7,
            kind: EventKind::Poll,
            data: r#"{"recipe":"a"}"#.into(),
        };
        assert_eq!(
            ev.frame(),
            Bytes::from("id: 7\nevent: poll\ndata: {\"recipe\":\"a\"}\n\n")
        );
        let bus = EventBus::new(1);
        let data = serde_json::json!({"error": "two\nlines"});
        bus.publish(EventKind::Build, &data);
        let last = bus.lock().events.back().unwrap().clone();
        assert!(!last.data.contains('\n'), "one data line: {:?}", last.data);
        assert!(last.id > 1_600_000_000_000_000, "ids start from the clock");
    }

    #[test]
    fn resume_from_the_ring_or_resync() {
        let bus = EventBus::starting_at(8, 100);
        for i in 0..(RING + 10) {
            bus.publish(EventKind::Queue, &i);
        }
        let last = bus.last_id();
        assert_eq!(last, 100 + RING as u64 + 10);
        let oldest = last - RING as u64 + 1;
        // Nothing missed.
        assert!(bus.subscribe(None).unwrap().backlog.is_empty());
        assert!(bus
            .subscribe(Some(&last.to_string()))
            .unwrap()
            .backlog
            .is_empty());
        // A few missed: exactly those, in order.
        let s = bus.subscribe(Some(&(last - 3).to_string())).unwrap();
        assert_eq!(
            ids(&s),
            [last - 2, last - 1, last].map(|i| (i, EventKind::Queue))
        );
        // The oldest kept event is the first one sent back.
        let s = bus.subscribe(Some(&(oldest - 1).to_string())).unwrap();
        assert_eq!(s.backlog.len(), RING);
        assert_eq!(s.backlog[0].id, oldest);
        // Too far behind, from the future (another run), or garbage.
        for seen in [(oldest - 2).to_string(), (last + 1).to_string(), "x".into()] {
            let s = bus.subscribe(Some(&seen)).unwrap();
            assert_eq!(ids(&s), [(last, EventKind::Resync)], "{seen}");
        }
    }

    #[test]
    fn slots_are_bounded_and_freed() {
        let bus = EventBus::new(2);
        let a = bus.subscribe(None).unwrap();
        let _b = bus.subscribe(None).unwrap();
        assert_eq!(bus.subscribe(None).err(), Some(Full(2)));
        assert_eq!(bus.clients(), 2);
        drop(a);
        assert!(bus.subscribe(None).is_ok());
    }

    async fn next_text(body: &mut EventStream) -> String {
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .unwrap();
        String::from_utf8(f.into_data().unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn streams_live_events_and_keepalives() {
        let bus = Arc::new(EventBus::starting_at(4, 0));
        bus.publish(EventKind::Reload, &1);
        let sub = bus.subscribe(Some("0")).unwrap();
        let cancel = CancellationToken::new();
        let mut body = stream_with(
            bus.clone(),
            sub,
            cancel.clone(),
            Duration::from_millis(100),
            STALL,
        );
        assert!(next_text(&mut body).await.starts_with("retry: 2000\n"));
        assert_eq!(
            next_text(&mut body).await,
            "id: 1\nevent: reload\ndata: 1\n\n"
        );
        bus.publish(EventKind::Poll, &2);
        assert_eq!(
            next_text(&mut body).await,
            "id: 2\nevent: poll\ndata: 2\n\n"
        );
        assert_eq!(next_text(&mut body).await, ": keep-alive\n\n");
        cancel.cancel();
        assert!(body.frame().await.is_none(), "stream ends on shutdown");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(bus.clients(), 0, "slot freed");
    }

    #[tokio::test]
    async fn a_lagging_subscriber_skips_ahead_and_a_stalled_one_is_dropped() {
        let bus = Arc::new(EventBus::starting_at(4, 0));
        let sub = bus.subscribe(None).unwrap();
        let cancel = CancellationToken::new();
        let mut body = stream_with(
            bus.clone(),
            sub,
            cancel.clone(),
            KEEPALIVE,
            Duration::from_millis(300),
        );
        assert!(next_text(&mut body).await.starts_with("retry:"));
        // Far more than the fan-out holds, while the client reads nothing.
        for i in 0..(FANOUT * 4) {
            bus.publish(EventKind::Queue, &i);
        }
        let mut seen = Vec::new();
        loop {
            let t = next_text(&mut body).await;
            let resync = t.contains("event: resync");
            seen.push(t);
            if resync {
                break;
            }
            assert!(seen.len() <= QUEUED_FRAMES + FANOUT + 2, "no resync");
        }
        let last = seen.last().unwrap();
        assert!(
            last.starts_with(&format!("id: {}\n", bus.last_id())),
            "{last}"
        );
        bus.publish(EventKind::Poll, &"after");
        assert!(next_text(&mut body).await.contains("data: \"after\""));
        // Now the client stops reading altogether: once the queued frames
        // are not taken for the stall time, the subscriber is dropped.
        for i in 0..(QUEUED_FRAMES * 2) {
            bus.publish(EventKind::Queue, &i);
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(bus.clients(), 0, "stalled subscriber dropped");
        drop(body);
    }
}
