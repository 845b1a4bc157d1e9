//! Command-line options, parsed the way `benches/socketio/server.js` parses them
//! (`--key value` or `--key=value`), so that `compare.sh` starts both peers alike.

use std::net::IpAddr;
use std::time::Duration;

/// Which adapter carries broadcasts between the server processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    /// `socketioxide-redis` with the plain (non-cluster) `redis` driver: every server
    /// subscribes to the namespace's request channel and receives every broadcast.
    Redis,
    /// socketioxide's in-memory adapter (a single process only).
    None,
}

impl AdapterKind {
    /// The name printed on the ready line, as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AdapterKind::Redis => "redis",
            AdapterKind::None => "none",
        }
    }
}

/// Everything the server is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opts {
    /// Listen port; 0 lets the kernel pick one (printed on the ready line).
    pub port: u16,
    /// Listen address.
    pub host: IpAddr,
    /// Redis URL (needed unless the adapter is `none`).
    pub redis: String,
    pub adapter: AdapterKind,
    /// Engine.IO heartbeat: how often the server pings.
    pub ping_interval: Duration,
    /// Engine.IO heartbeat: how long it waits for the pong.
    pub ping_timeout: Duration,
}

impl Default for Opts {
    /// The defaults of `server.js` (and of Engine.IO: 25 s / 20 s heartbeat).
    fn default() -> Self {
        Opts {
            port: 0,
            host: IpAddr::from([127, 0, 0, 1]),
            redis: String::new(),
            adapter: AdapterKind::Redis,
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Opts),
    Help,
}

/// The `--help` text.
pub const USAGE: &str = "\
usage: roomcast-bench-socketioxide [--port P] [--host H] [--redis URL] [--adapter redis|none]
                                   [--ping-interval MS] [--ping-timeout MS]
";

/// Parses the arguments (without the program name). `Err` carries the message to print
/// before exiting with status 2.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut opts = Opts::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if !k.is_empty() => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || match &inline {
            Some(v) => Ok(v.clone()),
            None => args.next().ok_or_else(|| format!("{key} needs a value")),
        };
        match key.as_str() {
            "--port" => opts.port = value()?.parse().map_err(|_| "--port: bad port")?,
            "--host" => opts.host = value()?.parse().map_err(|_| "--host: not an IP address")?,
            "--redis" => opts.redis = value()?,
            "--adapter" => {
                opts.adapter = match value()?.as_str() {
                    "redis" => AdapterKind::Redis,
                    "none" => AdapterKind::None,
                    _ => return Err("--adapter: redis or none".into()),
                }
            }
            "--ping-interval" => opts.ping_interval = millis(&key, &value()?)?,
            "--ping-timeout" => opts.ping_timeout = millis(&key, &value()?)?,
            "-h" | "--help" => return Ok(Command::Help),
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    if opts.adapter == AdapterKind::Redis && opts.redis.is_empty() {
        return Err("--adapter redis needs --redis URL".into());
    }
    Ok(Command::Run(opts))
}

fn millis(key: &str, v: &str) -> Result<Duration, String> {
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{key}: milliseconds expected"))
}

/// The Redis URL with `protocol=resp3` added when it names no protocol: the adapter's
/// `redis` driver receives pub/sub messages as RESP3 pushes on a multiplexed connection.
pub fn resp3_url(url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|kv| kv.starts_with("protocol=")) {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}protocol=resp3")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Opts, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run(o) => Ok(o),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn parses_both_value_forms() {
        let o = run(&[
            "--port",
            "0",
            "--redis=redis://127.0.0.1:7000",
            "--adapter",
            "redis",
            "--host=::1",
            "--ping-interval",
            "1000",
        ])
        .unwrap();
        assert_eq!(o.port, 0);
        assert_eq!(o.redis, "redis://127.0.0.1:7000");
        assert_eq!(o.adapter, AdapterKind::Redis);
        assert_eq!(o.host, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(o.ping_interval, Duration::from_secs(1));
        assert_eq!(o.ping_timeout, Duration::from_secs(20));
    }

    #[test]
    fn redis_adapter_needs_a_url_none_does_not() {
        assert!(run(&["--port", "0"]).is_err());
        let o = run(&["--adapter", "none"]).unwrap();
        assert_eq!(o.adapter, AdapterKind::None);
        assert_eq!(o.host, IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(run(&["--port", "70000", "--adapter", "none"]).is_err());
        assert!(run(&["--adapter", "streams", "--redis", "redis://x"]).is_err());
        assert!(run(&["--bogus"]).is_err());
        assert!(run(&["--port"]).is_err());
        assert!(run(&["--host", "localhost", "--adapter", "none"]).is_err());
        assert_eq!(parse(["--help".to_string()]), Ok(Command::Help));
    }

    #[test]
    fn adds_resp3_once() {
        assert_eq!(
            resp3_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379?protocol=resp3"
        );
        assert_eq!(
            resp3_url("redis://h:1/0?x=1"),
            "redis://h:1/0?x=1&protocol=resp3"
        );
        assert_eq!(
            resp3_url("redis://h:1?protocol=resp3"),
            "redis://h:1?protocol=resp3"
        );
    }
}
