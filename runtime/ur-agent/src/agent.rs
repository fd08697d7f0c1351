//! The running agent: identify the node, connect (retrying with backoff and
//! re-reading the configuration), declare ur's queues, serve requests, and
//! publish everything through the [`Outbox`] with publisher confirms.
//!
//! Tasks:
//! - the connection loop (this module's [`run`]): one session at a time;
//!   a lost connection ends the session, the next one redeclares queues
//!   and bindings;
//! - per session: consumers for the request and ping queues (handled
//!   inline: parse, ack, spawn) and one publisher draining the outbox;
//! - executes and broadcast replies: tasks of their own that outlive a
//!   session, so a broker restart does not interrupt a running script and
//!   its reply waits in the outbox;
//! - the sysinfo ticker (publish until setup is complete);
//! - the actions task (startup marker, reboot after a confirmed 113 reply).

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::AsyncTcpStream;
use lapin::types::{FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::broker::{self, Candidate, ConfigProblem, Resolution};
use crate::exec::{self, human, ExecOptions};
use crate::host::{self, SetupState, SysinfoOutput};
use crate::identity::Identity;
use crate::outbox::{AfterConfirm, Kind, Outbox, RecentRequests};
use crate::reply::{self, ExecuteReply, PingAck};
use crate::request::{self, RequestError, Route};
use crate::Config;

const EXCHANGE: &str = "amq.topic";
/// Longest wait for a publisher confirm before the connection is deemed
/// broken (the message stays queued).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the retry delay.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// Execute request ids remembered against re-runs.
const RECENT_REQUESTS: usize = 4096;

/// State shared by the tasks.
struct Shared {
    cfg: Config,
    exec: ExecOptions,
    identity: Identity,
    outbox: Mutex<Outbox>,
    outbox_changed: Notify,
    recent: Mutex<RecentRequests>,
    latest_sysinfo: Mutex<Arc<Vec<u8>>>,
    actions: mpsc::UnboundedSender<AfterConfirm>,
    startup_queued: AtomicBool,
    rebooting: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn push(&self, routing_key: String, body: Vec<u8>, kind: Kind, after: AfterConfirm) {
        lock(&self.outbox).push(routing_key, body, kind, after);
        self.outbox_changed.notify_one();
    }

    fn reply(&self, reqid: &str, reply: &ExecuteReply, after: AfterConfirm) {
        self.push(reply::execute_reply_key(&self.identity.uuid, reqid), reply.to_json(), Kind::ExecuteReply, after);
    }
}

/// Resolves when `stop` says true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Sleeps `d`; `false` if asked to stop meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stopped(stop) => false,
    }
}

/// Runs the agent until `shutdown` resolves. Never returns an error for
/// anything the network or the headnode does; every problem is logged and
/// retried.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    info!(
        sysinfo = %cfg.sysinfo.display(),
        setup_state = %cfg.setup_state.display(),
        "ur-agent {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let Some(first) = identify(&cfg, &mut stop).await else {
        info!("stopping (before the node was identified)");
        return Ok(());
    };
    info!(uuid = %first.identity.uuid, admin_mac = %first.identity.admin_mac, "node identified");
    let (act_tx, act_rx) = mpsc::unbounded_channel();
    let mut exec = ExecOptions::new(cfg.tmp_dir.clone());
    exec.max_output = cfg.max_output;
    exec.default_timeout = cfg.exec_timeout;
    let shared = Arc::new(Shared {
        exec,
        identity: first.identity,
        outbox: Mutex::new(Outbox::new()),
        outbox_changed: Notify::new(),
        recent: Mutex::new(RecentRequests::new(RECENT_REQUESTS)),
        latest_sysinfo: Mutex::new(Arc::new(first.json)),
        actions: act_tx,
        startup_queued: AtomicBool::new(false),
        rebooting: AtomicBool::new(false),
        cfg,
    });
    tokio::spawn(actions(shared.clone(), act_rx));
    tokio::spawn(sysinfo_ticker(shared.clone(), stop.clone()));
    connection_loop(shared, &mut stop).await;
    info!("stopped");
    Ok(())
}

/// Runs sysinfo until it gives a UUID and an admin MAC.
async fn identify(cfg: &Config, stop: &mut watch::Receiver<bool>) -> Option<SysinfoOutput> {
    let mut backoff = Backoff::new(cfg.retry_max);
    loop {
        match host::sysinfo(&cfg.sysinfo, false).await {
            Ok(out) => return Some(out),
            Err(e) => {
                let d = backoff.next_delay();
                error!("cannot identify this node: {e}; retrying in {}", human(d));
                if !sleep_or_stop(d, stop).await {
                    return None;
                }
            }
        }
    }
}

fn resolve(cfg: &Config) -> Resolution {
    if let Some(uri) = &cfg.broker_override {
        return broker::from_override(uri, cfg.connect_timeout);
    }
    let cmdline = std::fs::read_to_string(&cfg.cmdline).ok();
    let node_config = std::fs::read_to_string(&cfg.node_config).ok();
    broker::resolve(cmdline.as_deref(), node_config.as_deref())
}

/// An open connection and a duplicate of its socket: shutting the socket
/// down ends lapin's I/O thread even when the broker no longer answers
/// (dropping a `Connection` does not).
struct Link {
    conn: Connection,
    socket: Arc<Mutex<Option<std::net::TcpStream>>>,
}

impl Link {
    fn sever(&self) {
        if let Some(s) = lock(&self.socket).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Connects (TCP, then the AMQP handshake) within `connect_timeout`. The
/// TCP part is ours so that a broker that accepts but never answers does
/// not leave a thread behind per attempt.
async fn connect(c: &Candidate, cfg: &Config, uuid: &str) -> Result<Link, String> {
    let props = ConnectionProperties::default().with_connection_name(format!("ur-agent {uuid}").into());
    let runtime = lapin::runtime::default_runtime().map_err(|e| format!("no async runtime: {e}"))?;
    let socket: Arc<Mutex<Option<std::net::TcpStream>>> = Arc::default();
    let keep = socket.clone();
    let handshake = Connection::connector(
        c.uri(cfg.connect_timeout),
        runtime,
        async move |uri: AMQPUri, rt| {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((uri.authority.host.as_str(), uri.authority.port)).await?.collect();
            let stream = AsyncTcpStream::connect(&rt, addrs).await?;
            if let AsyncTcpStream::Plain(s) = &stream {
                if let Ok(fd) = s.get_ref().as_fd().try_clone_to_owned() {
                    *lock(&keep) = Some(std::net::TcpStream::from(fd));
                }
            }
            Ok(stream)
        },
        props,
    );
    let link = |conn| Link { conn, socket: socket.clone() };
    let res = match tokio::time::timeout(cfg.connect_timeout, handshake).await {
        Ok(Ok(conn)) => return Ok(link(conn)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}", human(cfg.connect_timeout))),
    };
    if let Some(s) = lock(&socket).take() {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    res
}

enum SessionEnd {
    Stopped,
    Lost(String),
}

async fn connection_loop(shared: Arc<Shared>, stop: &mut watch::Receiver<bool>) {
    let cfg = &shared.cfg;
    let mut backoff = Backoff::new(cfg.retry_max);
    let mut logged: Vec<ConfigProblem> = Vec::new();
    let mut waiting_logged = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let r = resolve(cfg);
        if r.problems != logged {
            for p in &r.problems {
                error!("{p}");
            }
            logged = r.problems.clone();
            waiting_logged = false;
        }
        if r.candidates.is_empty() {
            if !waiting_logged {
                warn!(
                    cmdline = %cfg.cmdline.display(),
                    node_config = %cfg.node_config.display(),
                    "no usable broker address; re-reading the configuration every {} at most",
                    human(cfg.retry_max)
                );
                waiting_logged = true;
            }
            if !sleep_or_stop(backoff.next_delay(), stop).await {
                return;
            }
            continue;
        }
        // Each address in order; every failure is one log line with its reason.
        let mut link = None;
        let mut retry = backoff.peek();
        let last = r.candidates.len() - 1;
        for (i, c) in r.candidates.iter().enumerate() {
            let res = tokio::select! {
                res = connect(c, cfg, &shared.identity.uuid) => res,
                _ = stopped(stop) => return,
            };
            match res {
                Ok(l) => {
                    link = Some((l, c.clone()));
                    break;
                }
                Err(e) if i < last => warn!("cannot connect to broker {c}: {e}; trying the next address"),
                Err(e) => {
                    retry = backoff.next_delay();
                    warn!("cannot connect to broker {c}: {e}; retrying in {}", human(retry));
                }
            }
        }
        let Some((link, c)) = link else {
            if !sleep_or_stop(retry, stop).await {
                return;
            }
            continue;
        };
        info!("connected to broker {c}");
        let t0 = Instant::now();
        let end = session(&shared, &link.conn, stop).await;
        let waiting = lock(&shared.outbox).disconnected();
        match end {
            SessionEnd::Stopped => {
                let _ = tokio::time::timeout(Duration::from_secs(2), link.conn.close(200, "ur-agent stopping".into()))
                    .await;
                link.sever();
                if waiting > 0 {
                    warn!("stopping with {waiting} message(s) not published");
                }
                return;
            }
            SessionEnd::Lost(why) => {
                if t0.elapsed() >= STABLE_SESSION {
                    backoff.reset();
                }
                retry = backoff.next_delay();
                warn!(
                    "connection to broker {c} lost: {why}; {waiting} message(s) waiting to be published; reconnecting in {}",
                    human(retry)
                );
                // The socket may still be open (e.g. no confirm in time): close
                // it so the old connection and its thread go away.
                link.sever();
                drop(link);
                if !sleep_or_stop(retry, stop).await {
                    return;
                }
            }
        }
    }
}

fn short(s: &str) -> Result<ShortString, String> {
    ShortString::try_new(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Declares ur's queues and bindings, consumes them and publishes the
/// outbox until the connection breaks or the agent stops.
async fn session(shared: &Arc<Shared>, conn: &Connection, stop: &mut watch::Receiver<bool>) -> SessionEnd {
    let mut events = conn.events_listener();
    let setup = async {
        let id = &shared.identity;
        let pub_ch = conn.create_channel().await.map_err(|e| format!("cannot open a channel: {e}"))?;
        pub_ch
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("cannot enable publisher confirms: {e}"))?;
        let sub_ch = conn.create_channel().await.map_err(|e| format!("cannot open a channel: {e}"))?;
        let rq = short(&id.request_queue())?;
        let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        sub_ch
            .queue_declare(rq.clone(), opts, FieldTable::default())
            .await
            .map_err(|e| format!("cannot declare queue {rq}: {e}"))?;
        for key in id.request_bindings() {
            sub_ch
                .queue_bind(
                    rq.clone(),
                    EXCHANGE.into(),
                    short(&key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("cannot bind {rq} to {key}: {e}"))?;
        }
        let pq = short(&id.ping_queue())?;
        let opts = QueueDeclareOptions { auto_delete: true, ..QueueDeclareOptions::default() };
        sub_ch
            .queue_declare(pq.clone(), opts, FieldTable::default())
            .await
            .map_err(|e| format!("cannot declare queue {pq}: {e}"))?;
        sub_ch
            .queue_bind(pq.clone(), EXCHANGE.into(), pq.clone(), QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(|e| format!("cannot bind {pq}: {e}"))?;
        let requests = sub_ch
            .basic_consume(rq.clone(), "ur-agent-request".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| format!("cannot consume {rq}: {e}"))?;
        let pings = sub_ch
            .basic_consume(pq.clone(), "ur-agent-ping".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| format!("cannot consume {pq}: {e}"))?;
        info!(request_queue = %rq, ping_queue = %pq, "queues declared and bound; serving");
        Ok::<_, String>((pub_ch, requests, pings))
    };
    let (pub_ch, mut requests, mut pings) = tokio::select! {
        r = setup => match r {
            Ok(x) => x,
            Err(e) => return SessionEnd::Lost(e),
        },
        _ = stopped(stop) => return SessionEnd::Stopped,
    };
    maybe_startup(shared);
    let mut publisher = tokio::spawn(publisher(shared.clone(), pub_ch));
    let mut events_open = true;
    let end = loop {
        tokio::select! {
            _ = stopped(stop) => break SessionEnd::Stopped,
            d = requests.next() => match d {
                Some(Ok(d)) => {
                    if let Err(e) = on_request(shared, d).await {
                        break SessionEnd::Lost(e);
                    }
                }
                Some(Err(e)) => break SessionEnd::Lost(format!("request consumer failed: {e}")),
                None => break SessionEnd::Lost("the request consumer was cancelled".into()),
            },
            d = pings.next() => match d {
                Some(Ok(d)) => {
                    if let Err(e) = on_ping(shared, d).await {
                        break SessionEnd::Lost(e);
                    }
                }
                Some(Err(e)) => break SessionEnd::Lost(format!("ping consumer failed: {e}")),
                None => break SessionEnd::Lost("the ping consumer was cancelled".into()),
            },
            ev = events.next(), if events_open => match ev {
                Some(Event::Error(e)) => break SessionEnd::Lost(e.to_string()),
                Some(ev) => debug!("connection event: {ev:?}"),
                None => events_open = false,
            },
            r = &mut publisher => break SessionEnd::Lost(match r {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "the publisher stopped".into(),
                Err(e) => format!("the publisher failed: {e}"),
            }),
        }
    };
    publisher.abort();
    end
}

/// Queues `ur.startup.<uuid>` unless this boot already sent it.
fn maybe_startup(shared: &Shared) {
    let marker = &shared.cfg.startup_marker;
    if marker.exists() || shared.startup_queued.swap(true, Ordering::SeqCst) {
        return;
    }
    let body = lock(&shared.latest_sysinfo).as_ref().clone();
    info!(marker = %marker.display(), "first start this boot: publishing ur.startup");
    shared.push(reply::startup_key(&shared.identity.uuid), body, Kind::Startup, AfterConfirm::WriteStartupMarker);
}

/// Publishes the outbox in order, each message confirmed before the next.
async fn publisher(shared: Arc<Shared>, ch: Channel) -> Result<(), String> {
    loop {
        let next = lock(&shared.outbox).take_next();
        let Some(m) = next else {
            shared.outbox_changed.notified().await;
            continue;
        };
        let key = match ShortString::try_new(m.routing_key.clone()) {
            Ok(k) => k,
            Err(e) => {
                error!(routing_key = %m.routing_key, "dropping a reply that cannot be sent: routing key too long ({e})");
                lock(&shared.outbox).confirmed(m.id);
                continue;
            }
        };
        let props = BasicProperties::default().with_content_type("application/json".into());
        let publish = async {
            ch.basic_publish(EXCHANGE.into(), key, BasicPublishOptions::default(), &m.body, props).await?.await
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
            Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => {
                let after = lock(&shared.outbox).confirmed(m.id);
                match m.kind {
                    Kind::Sysinfo | Kind::PingAck => {
                        debug!(routing_key = %m.routing_key, bytes = m.body.len(), "published")
                    }
                    _ => info!(routing_key = %m.routing_key, bytes = m.body.len(), "published (confirmed)"),
                }
                if let Some(a) = after.filter(|a| *a != AfterConfirm::Nothing) {
                    let _ = shared.actions.send(a);
                }
            }
            Ok(Ok(Confirmation::Nack(_))) => {
                lock(&shared.outbox).failed(m.id);
                warn!(routing_key = %m.routing_key, "the broker refused the message (nack); retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(Err(e)) => {
                lock(&shared.outbox).failed(m.id);
                return Err(format!("cannot publish {}: {e}", m.routing_key));
            }
            Err(_) => {
                lock(&shared.outbox).failed(m.id);
                return Err(format!("no confirm for {} within {}", m.routing_key, human(CONFIRM_TIMEOUT)));
            }
        }
    }
}

/// One message from the request queue. `Err` only when the connection is
/// unusable (the ack failed).
async fn on_request(shared: &Arc<Shared>, d: lapin::message::Delivery) -> Result<(), String> {
    let rk = d.routing_key.as_str().to_string();
    let size = d.data.len();
    d.acker.ack(BasicAckOptions::default()).await.map_err(|e| format!("cannot ack a request: {e}"))?;
    let route = match request::route(&rk) {
        Ok(r) => r,
        Err(e) => {
            warn!(routing_key = %rk, bytes = size, "dropping message: {e}");
            return Ok(());
        }
    };
    let reqid = route.reqid().to_string();
    if size > shared.cfg.max_message {
        let e = RequestError::TooLarge { size, limit: shared.cfg.max_message };
        warn!(routing_key = %rk, bytes = size, "dropping request: {e}");
        shared.reply(&reqid, &ExecuteReply::rejected(&e.to_string()), AfterConfirm::Nothing);
        return Ok(());
    }
    match route {
        Route::Broadcast { kind, .. } if kind == "sysinfo" => {
            info!(routing_key = %rk, "sysinfo broadcast");
            tokio::spawn(broadcast_sysinfo(shared.clone(), reqid));
        }
        Route::Broadcast { kind, .. } => {
            let e = RequestError::UnknownBroadcast(kind);
            warn!(routing_key = %rk, bytes = size, "rejected broadcast: {e}");
            shared.reply(&reqid, &ExecuteReply::rejected(&e.to_string()), AfterConfirm::Nothing);
        }
        Route::Execute { .. } => {
            let req = match request::parse_execute(&d.data) {
                Ok(r) => r,
                Err(e) => {
                    warn!(routing_key = %rk, bytes = size, "rejected execute request: {e}");
                    shared.reply(&reqid, &ExecuteReply::rejected(&e.to_string()), AfterConfirm::Nothing);
                    return Ok(());
                }
            };
            if !lock(&shared.recent).insert(&reqid) {
                warn!(routing_key = %rk, "execute {reqid} was already received; not running it again");
                return Ok(());
            }
            let what = match &req.program {
                request::Program::Script(s) => format!("script ({} bytes)", s.len()),
                request::Program::File(f) => format!("file {f:?}"),
            };
            info!(
                req_id = %reqid,
                args = req.args.len(),
                env = %req.env.as_ref().map(|e| format!("{} vars", e.len())).unwrap_or_else(|| "inherited".into()),
                timeout = %human(req.timeout.unwrap_or(shared.cfg.exec_timeout)),
                "executing {what}"
            );
            tokio::spawn(execute(shared.clone(), reqid, req));
        }
    }
    Ok(())
}

async fn execute(shared: Arc<Shared>, reqid: String, req: request::ExecuteRequest) {
    let t0 = Instant::now();
    let outcome = exec::run(&req, &shared.exec).await;
    let reply = outcome.reply();
    let reboot = outcome.wants_reboot();
    let notes = outcome.notes();
    let line = format!(
        "execute finished: exit status {} (replied {}), stdout {} bytes, stderr {} bytes, {} ms{}",
        outcome.raw_status(),
        reply.exit_status,
        outcome.stdout.len(),
        outcome.stderr.len(),
        t0.elapsed().as_millis(),
        if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) }
    );
    if notes.is_empty() {
        info!(req_id = %reqid, "{line}");
    } else {
        warn!(req_id = %reqid, "{line}");
    }
    if reboot {
        info!(req_id = %reqid, "exit status 113: the node reboots once the reply is confirmed");
    }
    let after = if reboot { AfterConfirm::Reboot { reqid: reqid.clone() } } else { AfterConfirm::Nothing };
    shared.reply(&reqid, &reply, after);
}

async fn broadcast_sysinfo(shared: Arc<Shared>, reqid: String) {
    match host::sysinfo(&shared.cfg.sysinfo, true).await {
        Ok(out) => {
            *lock(&shared.latest_sysinfo) = Arc::new(out.json.clone());
            shared.push(
                reply::execute_reply_key(&shared.identity.uuid, &reqid),
                out.json,
                Kind::BroadcastReply,
                AfterConfirm::Nothing,
            );
        }
        Err(e) => error!(req_id = %reqid, "cannot answer the sysinfo broadcast: {e}"),
    }
}

async fn on_ping(shared: &Arc<Shared>, d: lapin::message::Delivery) -> Result<(), String> {
    let rk = d.routing_key.as_str().to_string();
    let size = d.data.len();
    d.acker.ack(BasicAckOptions::default()).await.map_err(|e| format!("cannot ack a ping: {e}"))?;
    if size > shared.cfg.max_message {
        let e = RequestError::TooLarge { size, limit: shared.cfg.max_message };
        warn!(routing_key = %rk, bytes = size, "dropping ping: {e}");
        return Ok(());
    }
    match request::parse_ping(&d.data) {
        Ok(p) => {
            let key = reply::ping_ack_key(&p.client_id, &shared.identity.uuid);
            info!(routing_key = %rk, client_id = %p.client_id, "ping; answering on {key}");
            shared.push(key, PingAck::new(p.id, SystemTime::now()).to_json(), Kind::PingAck, AfterConfirm::Nothing);
        }
        Err(e) => warn!(routing_key = %rk, bytes = size, "dropping ping (no reply address): {e}"),
    }
    Ok(())
}

/// Publishes sysinfo now and every interval until the setup-state file
/// says complete; then once more and stops.
async fn sysinfo_ticker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cfg = &shared.cfg;
    loop {
        let state = host::setup_state(&cfg.setup_state);
        if let SetupState::Unreadable(why) = &state {
            warn!("{why}; treating the node as not set up");
        }
        match host::sysinfo(&cfg.sysinfo, true).await {
            Ok(out) => {
                if out.identity.uuid != shared.identity.uuid {
                    warn!(
                        "sysinfo UUID is now {} (was {} at start); sysinfo goes out under the new one",
                        out.identity.uuid, shared.identity.uuid
                    );
                }
                *lock(&shared.latest_sysinfo) = Arc::new(out.json.clone());
                let key = reply::sysinfo_key(&out.identity.uuid);
                debug!(routing_key = %key, "sysinfo queued");
                shared.push(key, out.json, Kind::Sysinfo, AfterConfirm::Nothing);
                if state == SetupState::Complete {
                    info!(
                        setup_state = %cfg.setup_state.display(),
                        "the node is set up: sysinfo sent once more, periodic sysinfo stops"
                    );
                    return;
                }
            }
            Err(e) => error!("cannot publish sysinfo: {e}; next try in {}", human(cfg.sysinfo_interval)),
        }
        if !sleep_or_stop(cfg.sysinfo_interval, &mut stop).await {
            return;
        }
    }
}

/// Startup marker and reboot, run once the broker confirmed the message.
async fn actions(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<AfterConfirm>) {
    while let Some(a) = rx.recv().await {
        match a {
            AfterConfirm::Nothing => {}
            AfterConfirm::WriteStartupMarker => {
                let m = &shared.cfg.startup_marker;
                match host::write_marker(m) {
                    Ok(()) => info!(marker = %m.display(), "ur.startup confirmed"),
                    Err(e) => warn!(
                        "ur.startup confirmed but the marker {} cannot be written: {e}; a restarted ur-agent will send it again",
                        m.display()
                    ),
                }
            }
            AfterConfirm::Reboot { reqid } => {
                if shared.rebooting.swap(true, Ordering::SeqCst) {
                    info!(req_id = %reqid, "exit status 113 again: a reboot is already under way");
                } else {
                    tokio::spawn(reboot(shared.clone(), reqid));
                }
            }
        }
    }
}

/// How long a failed orderly reboot request waits before forcing: longer
/// than init's stop timeout (SIGTERM, then SIGKILL after 10 s), so an init
/// already shutting down finishes first.
const REBOOT_ERROR_GRACE: Duration = Duration::from_secs(30);

async fn reboot(shared: Arc<Shared>, reqid: String) {
    let cfg = &shared.cfg;
    let cmd = cfg.reboot_cmd.join(" ");
    let force = cfg.force_reboot_cmd.as_ref().map(|c| c.join(" ")).unwrap_or_else(|| "sync + reboot(2)".into());
    warn!(req_id = %reqid, "reply confirmed; asking init for an orderly reboot: {cmd}");
    match host::run_command(&cfg.reboot_cmd, host::REBOOT_CMD_TIMEOUT).await {
        Ok(()) => {
            info!(
                "orderly reboot requested; forcing it ({force}) if the node is still up in {}",
                human(cfg.force_reboot_after)
            );
            tokio::time::sleep(cfg.force_reboot_after).await;
            warn!(
                "the node is still up {} after the reboot request: forcing it ({force})",
                human(cfg.force_reboot_after)
            );
        }
        Err(e) => {
            // init may already be shutting down (it stops us next, and the
            // request's connection closes under triton-ctl): give it time
            // before forcing, so the pool is exported.
            let grace = cfg.force_reboot_after.min(REBOOT_ERROR_GRACE);
            error!(
                "the orderly reboot request failed: {e}; forcing the reboot ({force}) if the node is still up in {}",
                human(grace)
            );
            tokio::time::sleep(grace).await;
        }
    }
    match host::force_reboot(cfg.force_reboot_cmd.as_deref()).await {
        Ok(()) => info!("forced reboot command done ({force})"),
        Err(e) => {
            error!("forced reboot failed: {e}; a later exit status 113 will try again");
            shared.rebooting.store(false, Ordering::SeqCst);
        }
    }
}
