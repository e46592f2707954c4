//! `url=`: where Redis is, checked strictly when the limiter is created
//! (a malformed URL is `RL_ERR_CONFIG`; an unreachable server is not).
//!
//! Two forms:
//!
//! - `redis://[[user]:password@]host[:port][/db]` — one server. `port`
//!   defaults to 6379, `db` (a number) to 0. `user` and `password` may be
//!   percent-encoded (`%40` for `@`). `redis://:secret@host:6379` is a password
//!   without a user name (plain `AUTH secret`).
//! - `redis+cluster://[[user]:password@]host:port[,host:port...]` — a Redis
//!   Cluster, reached through any of the listed seed nodes; the credentials
//!   apply to every node; no `/db` (a cluster has only database 0).
//!
//! Hosts are names, IPv4 addresses or bracketed IPv6 addresses (`[::1]:6379`).
//! TLS (`rediss://`), Unix sockets and query options are not supported.
//!
//! **Credentials in messages.** Every error quotes the URL through
//! [`quoted`], which masks what precedes the last `@`
//! (`redis://alice:***@host:6379`; see [`crate::error::redact`]), and
//! `Target`'s `Debug` prints `***` for the password: `rl_last_error()` is
//! printed and logged by the host program.

use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::error::{quoted, MASK};

/// A parsed `url=`. Its `Debug` masks the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` pairs: one for a single server, the seeds of a cluster.
    pub nodes: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    pub cluster: bool,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Target { nodes, username, password, db, cluster } = self;
        f.debug_struct("Target")
            .field("nodes", nodes)
            .field("username", username)
            .field("password", &password.as_ref().map(|_| MASK))
            .field("db", db)
            .field("cluster", cluster)
            .finish()
    }
}

impl Target {
    /// Parses and validates `url`; the error says what is wrong with it
    /// (quoting the URL with its credentials masked).
    pub fn parse(url: &str) -> Result<Target, String> {
        let bad = |why: &str| Err(format!("bad value in {}: {why}", quoted(&format!("url={url}"))));
        let (cluster, rest) = if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("redis+cluster://") {
            (true, r)
        } else {
            return bad("expected redis://[user:password@]host:port[/db] or redis+cluster://host:port[,host:port...]");
        };
        if rest.contains(['?', '#']) {
            return bad("query strings and fragments are not supported");
        }
        // The credentials end at the LAST '@', so a raw '@' in a password still works.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hosts, db) = match rest.split_once('/') {
            Some((h, "")) => (h, None),
            Some((h, d)) => (h, Some(d)),
            None => (rest, None),
        };
        let db = match db {
            None => 0,
            Some(d) if cluster => {
                return bad(&format!(
                    "a cluster URL takes no database ({}): Redis Cluster has only database 0",
                    quoted(&format!("/{d}"))
                ))
            }
            Some(d) => match d.parse::<i64>() {
                Ok(n) if n >= 0 && d.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return bad(&format!("database {} is not a number", quoted(d))),
            },
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => ("", Some(u)),
                };
                let dec = |s: &str| percent_decode(s).ok_or(());
                let Ok(user) = dec(user) else { return bad("bad percent-encoding in the user name") };
                let pass = match pass.map(dec) {
                    Some(Ok(p)) => Some(p),
                    Some(Err(())) => return bad("bad percent-encoding in the password"),
                    None => None,
                };
                ((!user.is_empty()).then_some(user), pass.filter(|p| !p.is_empty()))
            }
        };
        let mut nodes = Vec::new();
        for hp in hosts.split(',') {
            match parse_host_port(hp) {
                Ok(n) => nodes.push(n),
                Err(why) => return bad(&why),
            }
        }
        if nodes.len() > 1 && !cluster {
            return bad("several hosts need the redis+cluster:// form");
        }
        Ok(Target { nodes, username, password, db, cluster })
    }

    /// What the redis crate needs to connect to node `i`.
    pub fn connection_info(&self, i: usize) -> ConnectionInfo {
        let (host, port) = &self.nodes[i];
        let mut redis = RedisConnectionInfo::default().set_db(self.db).set_skip_set_lib_name();
        if let Some(u) = &self.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        ConnectionAddr::Tcp(host.clone(), *port)
            .into_connection_info()
            .expect("a TCP address is always a valid connection info")
            .set_redis_settings(redis)
    }
}

fn parse_host_port(hp: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(r) = hp.strip_prefix('[') {
        let Some((h, after)) = r.split_once(']') else { return Err(format!("unclosed '[' in {}", quoted(hp))) };
        match after {
            "" => (h, None),
            p => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("junk after ']' in {}", quoted(hp))),
            },
        }
    } else {
        match hp.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    };
    if host.is_empty() {
        return Err(format!("missing host in {}", quoted(hp)));
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
        return Err(format!("bad host name {}", quoted(host)));
    }
    let port = match port {
        None => 6379,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("bad port {}", quoted(p))),
        },
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(h: &str, p: u16) -> (String, u16) {
        (h.to_owned(), p)
    }

    #[test]
    fn good_urls() {
        let t = Target::parse("redis://127.0.0.1:6380").unwrap();
        assert_eq!((t.nodes, t.db, t.cluster, t.password), (vec![node("127.0.0.1", 6380)], 0, false, None));
        let t = Target::parse("redis://localhost").unwrap();
        assert_eq!(t.nodes, vec![node("localhost", 6379)]);
        let t = Target::parse("redis://alice:s%40cr%3At@h:1/3").unwrap();
        assert_eq!((t.username.as_deref(), t.password.as_deref(), t.db), (Some("alice"), Some("s@cr:t"), 3));
        let t = Target::parse("redis://:pw@h:1/").unwrap();
        assert_eq!((t.username, t.password.as_deref(), t.db), (None, Some("pw"), 0));
        let t = Target::parse("redis://a:p@ss@h:1").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        let t = Target::parse("redis://[::1]:7000").unwrap();
        assert_eq!(t.nodes, vec![node("::1", 7000)]);
        let t = Target::parse("redis+cluster://a:1,b:2,[::1]:3").unwrap();
        assert!(t.cluster);
        assert_eq!(t.nodes, vec![node("a", 1), node("b", 2), node("::1", 3)]);
    }

    #[test]
    fn bad_urls() {
        for (url, why) in [
            ("http://h:1", "expected redis://"),
            ("rediss://h:1", "expected redis://"),
            ("redis://", "missing host"),
            ("redis://h:0", "bad port"),
            ("redis://h:70000", "bad port"),
            ("redis://h:x", "bad port"),
            ("redis://h:1/x", "is not a number"),
            ("redis://h:1/-1", "is not a number"),
            ("redis://h:1?db=2", "query strings"),
            ("redis://a:1,b:2", "redis+cluster://"),
            ("redis+cluster://a:1/2", "takes no database"),
            ("redis://h h:1", "bad host"),
            ("redis://u%zz:p@h:1", "percent-encoding in the user name"),
            ("redis://[::1:1", "unclosed"),
        ] {
            let e = Target::parse(url).expect_err(url);
            assert!(e.contains(why) && e.contains(&*crate::error::redact(url)), "{url}: {e}");
        }
    }

    /// The password is masked in every refusal, whatever its spelling, and
    /// in `Debug`; the rest of the URL is still quoted.
    #[test]
    fn refusals_mask_the_password() {
        for (url, shown, why) in [
            ("redis://:Zq7xPW@h:x", "redis://:***@h:x", "bad port \"x\""),
            ("redis://alice:Zq7xPW@h:x", "redis://alice:***@h:x", "bad port"),
            ("redis://Zq7xPW@h:x", "redis://***@h:x", "bad port"),
            ("redis://:Zq7x%50W@h:1/x", "redis://:***@h:1/x", "database \"x\""),
            ("redis://:Zq7x@PW@h:1/x", "redis://:***@h:1/x", "is not a number"),
            ("redis://:Zq7x/PW@h:1?a", "redis://:***@h:1?a", "query strings"),
            ("redis://:Zq7x%zPW@h:1", "redis://:***@h:1", "percent-encoding in the password"),
            ("redis+cluster://u:Zq7xPW@a:1,b:2/0", "redis+cluster://u:***@a:1,b:2/0", "takes no database"),
            ("redis+cluster://u:Zq7xPW@a:1,[b", "redis+cluster://u:***@a:1,[b", "unclosed '['"),
            ("redis//:Zq7xPW@h:1", "***@h:1", "expected redis://"),
        ] {
            let e = Target::parse(url).expect_err(url);
            assert!(e.contains(&format!("\"url={shown}\"")) && e.contains(why), "{url}: {e}");
            assert!(!e.contains("Zq7x") && !e.contains("PW"), "{url}: {e}");
        }
        // Random URLs: whatever the password holds and whatever is wrong
        // with the rest, neither a refusal nor a Debug contains it.
        const PIECES: &[&str] = &[
            "a", "Z", "0", "9", "@", ":", "/", "?", "#", "=", "%", "%4", "%41", "%zz", ",", "[", "]", "-", "é", "\x01",
        ];
        const HOSTS: &[&str] =
            &["h", "h:1", "h:x", "[::1]:2", "[", "h:1/3", "h:1/x", "a:1,b:2", ":", "", "h h", "h:1?x"];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..20_000 {
            let pw: String = (0..next(6)).map(|_| PIECES[next(PIECES.len())]).collect();
            let host = HOSTS[next(HOSTS.len())];
            let scheme = ["redis://", "redis+cluster://", "redis:/", "rediss://", ""][next(5)];
            let userinfo = ["alice:", ":", ""][next(3)];
            if userinfo.is_empty() && pw.contains(':') {
                continue; // then the grammar reads "Zq7x..." up to the ':' as the user name
            }
            let url = format!("{scheme}{userinfo}Zq7x{pw}@{host}");
            match Target::parse(&url) {
                Err(e) => assert!(!e.contains("Zq7x"), "{url}: {e}"),
                Ok(t) => assert!(!format!("{t:?}").contains("Zq7x"), "{url}: {t:?}"),
            }
        }
        let t = Target::parse("redis://alice:Zq7xPW@h:1").unwrap();
        let debug = format!("{t:?}");
        assert!(debug.contains("alice") && debug.contains("***") && !debug.contains("Zq7x"), "{debug}");
    }
}
