//! The daemon's HTTP server under a crowd of idle and slow clients, and /metrics behind its
//! token: `dozor run` against the simulator, clients on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tenant_config;
use dozor::config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor_sim::SimHandle;

/// Idle connections the acceptance test holds: more than systemd's default 1024 descriptors.
const IDLE: usize = 1_500;

/// Raises this process's soft open-file limit to `want` (or the hard limit): the test itself
/// holds the idle sockets.
fn raise_own_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a struct owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur
}

struct Daemon {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dozor run` with `server` lines added to its `[server]` section, ready (first cycle done).
async fn daemon(h: &SimHandle, server: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n[sync]\ninterval_secs = 600\n{}",
        common::only_rules(
            tenant_config(
                h,
                CrmKind::Bitrix24,
                TelephonyKind::Comagic,
                &common::sqlite_url(dir.path()),
                "ru"
            ),
            &[]
        )
    );
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args([
            "--config",
            &path.display().to_string(),
            "--log-format",
            "json",
            "run",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        port,
        _dir: dir,
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if get(d.port, "/readyz", None).is_ok_and(|(s, _)| s == 200) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/readyz never became ready");
}

/// One request on a fresh connection: status and body. Blocking, with a 5 s deadline.
fn get(port: u16, path: &str, bearer: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {out:?}")))?;
    Ok((status, out))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// 1,500 idle connections (beyond systemd's default 1024 descriptors) do not make /healthz
/// unreachable: at the cap the longest idle connection makes room, the daemon's descriptors stay
/// bounded, a client that never finishes its headers is cut off after the deadline, and SIGTERM
/// still stops the daemon at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_1500_idle_connections_are_held() {
    let limit = raise_own_nofile(IDLE as u64 + 1_024);
    assert!(
        limit >= IDLE as u64 + 256,
        "this test needs {IDLE} sockets; the hard open-file limit is {limit}"
    );
    let h = common::small_sim(21).await;
    let mut d = daemon(&h, "").await;
    let pid = d.child.id();

    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", d.port))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    // A client that sends half a request and then nothing (after the crowd, so that it is not
    // the one pushed out to make room).
    let mut slow = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let slow_since = Instant::now();
    // Let the daemon accept them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds = open_fds(pid);
    let mut worst = Duration::ZERO;
    for path in ["/healthz", "/readyz", "/healthz"] {
        let t = Instant::now();
        let (status, body) = get(d.port, path, None).expect("the server answers");
        worst = worst.max(t.elapsed());
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert!(
        fds < 512 + 128,
        "the daemon holds {fds} descriptors with {IDLE} clients"
    );

    // The half-sent request is cut off after the header deadline (10 s), not held for ever.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let cut_after = slow_since.elapsed();
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&cut_after),
        "a client that never finished its headers was kept {cut_after:?}"
    );

    let stop = Instant::now();
    let (status, err) = common::terminate(&mut d.child).await;
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(
        stop.elapsed() < Duration::from_secs(10),
        "{:?}",
        stop.elapsed()
    );
    drop(idle);
    eprintln!(
        "{IDLE} idle connections held: /healthz answered in at most {} ms, daemon at {fds} \
         descriptors, half-sent headers cut off after {:.1} s, stopped in {:.1} s",
        worst.as_millis(),
        cut_after.as_secs_f64(),
        stop.elapsed().as_secs_f64()
    );
}

/// With `server.metrics_token_file` set, /metrics answers 401 without the token (or with a
/// wrong one) and the metrics with it; /healthz needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_ask_for_the_bearer_token() {
    let h = common::small_sim(22).await;
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("metrics-token");
    std::fs::write(&file, "metrics-token-0123456789\n").unwrap();
    let d = daemon(&h, &format!("metrics_token_file = \"{}\"", file.display())).await;
    let (status, body) = get(d.port, "/metrics", None).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("server.metrics_token"), "{body}");
    assert!(!body.contains("metrics-token-0123456789"), "{body}");
    assert_eq!(get(d.port, "/metrics", Some("wrong")).unwrap().0, 401);
    let (status, body) = get(d.port, "/metrics", Some("metrics-token-0123456789")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("dozor_cycles_total"), "{body}");
    assert_eq!(get(d.port, "/healthz", None).unwrap().0, 200);
}

fn parse_server(server: &str) -> Result<config::ServerConfig, String> {
    let text = format!(
        "[server]\n{server}\n\n[[tenants]]\nid = \"t\"\n\n[tenants.crm]\nkind = \"bitrix24\"\n\
         webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"\n"
    );
    config::parse(&text, None, None)
        .map(|l| l.config.server)
        .map_err(|e| e.to_string())
}

/// The server settings are checked at load: the token from its file, never both forms, never
/// empty; the cap within range; a warning when metrics are reachable from other hosts openly.
#[test]
fn server_settings_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tok");
    std::fs::write(&file, "  s3cret-token \n").unwrap();
    let s = parse_server(&format!("metrics_token_file = \"{}\"", file.display())).unwrap();
    assert_eq!(s.metrics_token.unwrap().expose(), "s3cret-token");
    assert_eq!(s.max_connections, 512);

    let e = parse_server(&format!(
        "metrics_token = \"x\"\nmetrics_token_file = \"{}\"",
        file.display()
    ))
    .unwrap_err();
    assert!(
        e.contains("either `server.metrics_token` or `server.metrics_token_file`"),
        "{e}"
    );
    let e = parse_server("metrics_token_file = \"/nonexistent/tok\"").unwrap_err();
    assert!(
        e.contains("server.metrics_token_file") && e.contains("/nonexistent/tok"),
        "{e}"
    );
    let e = parse_server("metrics_token = \" \"").unwrap_err();
    assert!(
        e.contains("server.metrics_token") && e.contains("empty"),
        "{e}"
    );
    let e = parse_server("max_connections = 0").unwrap_err();
    assert!(
        e.contains("server.max_connections") && e.contains("must be 1 to"),
        "{e}"
    );

    let open = parse_server("listen = \"0.0.0.0:9187\"").unwrap();
    let w = open.exposure_warning().expect("a warning for open metrics");
    assert!(
        w.contains("0.0.0.0:9187") && w.contains("server.metrics_token_file"),
        "{w}"
    );
    let closed = parse_server(&format!(
        "listen = \"0.0.0.0:9187\"\nmetrics_token_file = \"{}\"",
        file.display()
    ))
    .unwrap();
    assert_eq!(closed.exposure_warning(), None);
    assert_eq!(parse_server("").unwrap().exposure_warning(), None);
    assert_eq!(
        parse_server("listen = \"[::1]:9187\"")
            .unwrap()
            .exposure_warning(),
        None
    );
}
