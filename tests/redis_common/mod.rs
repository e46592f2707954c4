//! Shared by the tests/redis_*.rs suites: where the servers are (set by
//! scripts/with_redis.sh), skipping politely without them, and servers of our
//! own for the tests that kill them or count their commands.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The value of `var`, or None after printing why the test is skipped.
pub fn env_or_skip(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("SKIPPED {test}: {var} is not set (run under scripts/with_redis.sh, as `make test-redis` does)");
            None
        }
    }
}

/// A prefix unique to this process and call, so tests never share keys.
pub fn prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("rl-{tag}-{}-{}:", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port != 6379 {
            return port;
        }
    }
}

/// A redis-server of our own (killed on drop).
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    binary: String,
    extra: Vec<String>,
}

impl Server {
    pub fn start(binary: &str) -> Server {
        Server::start_with(binary, &[])
    }

    /// A server started with `extra` arguments (configuration directives).
    pub fn start_with(binary: &str, extra: &[&str]) -> Server {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("rl-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut s = Server { port, child: None, dir, binary: binary.to_owned(), extra };
        s.restart();
        s
    }

    /// (Re)starts the server on the same port; waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(mut c) = redis::Client::open(self.url().as_str()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str()).unwrap().get_connection().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain connection for inspecting a server from a test.
pub fn conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection_with_timeout(Duration::from_secs(5)).unwrap()
}

/// A "server" that accepts connections and never answers: holds them open
/// until the process ends.
pub fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// A port that refuses connections (bound once, then released).
pub fn refused_port() -> u16 {
    free_port()
}

/// The commands `f` made clients send to the server, by name, as MONITOR
/// shows them (commands a script runs inside itself are marked "lua" there
/// and left out).
pub fn commands_during(port: u16, admin: &mut redis::Connection, f: impl FnOnce()) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut mon = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    mon.write_all(b"MONITOR\r\n").unwrap();
    let mut lines = BufReader::new(mon.try_clone().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "+OK");
    let marker = |admin: &mut redis::Connection, m: &str| {
        let _: String = redis::cmd("ECHO").arg(m).query(admin).unwrap();
    };
    marker(admin, "rl-start");
    f();
    marker(admin, "rl-end");
    let mut seen = Vec::new();
    let mut inside = false;
    for line in lines {
        let line = line.unwrap();
        if line.contains("\"rl-start\"") {
            inside = true;
            continue;
        }
        if line.contains("\"rl-end\"") {
            break;
        }
        if inside && !line.contains(" lua] ") {
            let name = line.split('"').nth(1).unwrap_or("?").to_ascii_lowercase();
            seen.push(name);
        }
    }
    seen
}
