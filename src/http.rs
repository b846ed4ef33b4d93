//! The one HTTP client: how every request we make (to the ingress, to a
//! token endpoint) is built, run, and classified when it gets no answer.
//!
//! Plumbing like `sys`, `tls` and `secret`: it imports nothing else of
//! ours, so the protocol clients may use it. reqwest's async client, on one
//! runtime for the whole process (a worker thread of its own) that callers,
//! plain threads, block on with a deadline: async is what lets the relay
//! watch a request body leave and resolve names itself. TLS is our own
//! configuration ([`crate::tls`]); redirects are never followed (they would
//! carry a password or a client secret to another URL); a proxy from the
//! environment only for https:// and never for this machine.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::{redirect, Proxy, RequestBuilder, Url};
use tokio::runtime::Runtime;

use crate::sys::{io_reason, is_loopback};
use crate::tls;

pub const USER_AGENT: &str = concat!("chatwoot-ingress/", env!("CARGO_PKG_VERSION"));

/// How a client connects.
pub struct Options<'a> {
    /// Connecting, TLS included, takes at most this long.
    pub connect_timeout: Duration,
    /// Idle connections kept per host for the next request (0: none).
    pub idle_per_host: usize,
    pub tls: Tls<'a>,
    /// Keep the server's certificate on each response (for `check`).
    pub keep_certificate: bool,
}

/// Whether a client speaks https://.
pub enum Tls<'a> {
    /// No https:// URL will be asked for: the system's trust store is not
    /// even read (any https:// request then fails as untrusted).
    Unused,
    /// The system's trust store and the administrator's `ca_file`.
    Verified { ca_file: Option<&'a Path> },
}

/// A client that could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The `ca_file` cannot be used: a configuration problem.
    #[error("{0}")]
    CaFile(String),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("cannot start the HTTP client: {0}")]
    Runtime(String),
}

/// Why a request got no answer, by the types in its error's cause chain,
/// never by its words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The host name does not resolve.
    Dns,
    /// No connection: refused, unreachable, or failed while connecting.
    Refused,
    /// TLS failed: a certificate not trusted or not for the host, a
    /// protocol error.
    Tls,
    /// A direct https:// connection was made, then ended during the TLS
    /// handshake: what a server that does not speak TLS on the port does.
    HandshakeEnded,
    /// No answer in time.
    Timeout,
    /// The connection broke after it was made.
    Lost,
}

/// A request that got no answer: why, and the error with its causes on one
/// line (for [`Kind::Dns`], the resolver's words about the name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    pub detail: String,
}

/// An HTTP client on the process's runtime.
#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    proxies: Arc<Proxies>,
    runtime: &'static Runtime,
}

impl Client {
    pub fn new(options: &Options) -> Result<Client, SetupError> {
        let proxies = Arc::new(Proxies::from_env());
        let policy = proxies.clone();
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .pool_max_idle_per_host(options.idle_per_host)
            .http1_only()
            .dns_resolver(Arc::new(SystemResolver))
            .no_proxy()
            .proxy(Proxy::custom(move |url| policy.for_url(url).cloned()))
            .tls_info(options.keep_certificate);
        if let Tls::Verified { ca_file } = options.tls {
            let config = tls::client_config(ca_file).map_err(|e| SetupError::CaFile(e.to_string()))?;
            builder = builder.use_preconfigured_tls(config);
        }
        let inner = builder.build().map_err(|e| SetupError::Client(chain(&e)))?;
        Ok(Client { inner, proxies, runtime: runtime()? })
    }

    pub fn post(&self, url: Url) -> RequestBuilder {
        self.inner.post(url)
    }

    /// The proxy a request to `url` goes through, if any.
    pub fn proxy_for(&self, url: &Url) -> Option<&Url> {
        self.proxies.for_url(url)
    }

    /// Run `exchange` on the runtime, the calling thread blocked until it
    /// is done or `limit` has passed (then None). Never call it from the
    /// runtime itself: callers are plain threads.
    pub fn run<T>(&self, limit: Duration, exchange: impl Future<Output = T>) -> Option<T> {
        self.runtime.block_on(async { tokio::time::timeout(limit, exchange).await.ok() })
    }

    /// Why a request to `url` got no answer.
    pub fn failure(&self, url: &Url, e: &reqwest::Error) -> Failure {
        let direct_https = url.scheme() == "https" && self.proxy_for(url).is_none();
        classify(e, direct_https)
    }
}

/// The process's one runtime, started by the first client.
fn runtime() -> Result<&'static Runtime, SetupError> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("http")
        .enable_all()
        .build()
        .map_err(|e| SetupError::Runtime(io_reason(&e)))?;
    // Another thread may have started one meanwhile: that one is kept.
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Classify a transport failure by the types in its cause chain.
/// `direct_https`: the request went to an https:// URL, not through a proxy.
fn classify(e: &reqwest::Error, direct_https: bool) -> Failure {
    use io::ErrorKind::*;
    let detail = chain(e);
    let mut io_kind = None;
    let mut tls_failed = false;
    let mut dns = None;
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(failure) = err.downcast_ref::<DnsError>() {
            dns = Some(failure.to_string());
        } else if err.is::<rustls::Error>() {
            tls_failed = true;
        } else if let Some(io) = err.downcast_ref::<io::Error>() {
            tls_failed |= wraps_tls_error(io);
            io_kind = Some(innermost_kind(io));
        }
        source = err.source();
    }
    let kind = if e.is_timeout() || io_kind == Some(TimedOut) {
        Kind::Timeout
    } else if let Some(dns) = dns {
        return Failure { kind: Kind::Dns, detail: dns };
    } else if tls_failed {
        Kind::Tls
    } else if e.is_connect()
        && direct_https
        && matches!(io_kind, Some(UnexpectedEof | ConnectionReset | ConnectionAborted | InvalidData))
    {
        // Through a proxy, it is the proxy that dropped the connection.
        Kind::HandshakeEnded
    } else if matches!(
        io_kind,
        Some(ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable)
    ) || e.is_connect()
    {
        Kind::Refused
    } else {
        Kind::Lost
    };
    Failure { kind, detail }
}

/// Whether an io::Error carries a rustls error, itself or in io::Errors
/// wrapped in it (io::Error's `source` skips the error it wraps).
fn wraps_tls_error(e: &io::Error) -> bool {
    match e.get_ref() {
        Some(inner) if inner.is::<rustls::Error>() => true,
        Some(inner) => inner.downcast_ref::<io::Error>().is_some_and(wraps_tls_error),
        None => false,
    }
}

/// The kind of an io::Error, looking through io::Errors wrapped in it
/// (hyper-rustls wraps the socket's error in one of kind Other).
fn innermost_kind(e: &io::Error) -> io::ErrorKind {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<io::Error>()) {
        Some(inner) => innermost_kind(inner),
        None => e.kind(),
    }
}

/// A host name that does not resolve: told apart from every other failure
/// by its type, whatever words the resolver uses.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct DnsError {
    host: String,
    reason: String,
}

/// getaddrinfo, off the runtime's thread, failing with a [`DnsError`].
struct SystemResolver;

impl reqwest::dns::Resolve for SystemResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let lookup = host.clone();
            let found = tokio::task::spawn_blocking(move || (lookup.as_str(), 0).to_socket_addrs())
                .await
                .map_err(|e| Box::new(e) as Box<dyn StdError + Send + Sync>)?;
            let addresses: Vec<_> = match found {
                Ok(addresses) => addresses.collect(),
                Err(e) => return Err(Box::new(DnsError { host, reason: io_reason(&e) }) as _),
            };
            if addresses.is_empty() {
                return Err(Box::new(DnsError { host, reason: "no address".into() }) as _);
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Which proxy from the environment a URL goes through. Only https:// is
/// ever proxied: through a proxy, a cleartext http:// request would hand
/// the password to a third party. Loopback is never proxied.
pub struct Proxies {
    https: Option<Url>,
    no_proxy: Vec<String>,
}

impl Proxies {
    pub fn from_env() -> Proxies {
        let var = |names: &[&str]| {
            names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let https = var(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]).and_then(|text| {
            let text = if text.contains("://") { text } else { format!("http://{text}") };
            Url::parse(text.trim()).ok()
        });
        let no_proxy = var(&["NO_PROXY", "no_proxy"])
            .unwrap_or_default()
            .split(',')
            .map(|entry| entry.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|entry| !entry.is_empty())
            .collect();
        Proxies { https, no_proxy }
    }

    pub fn for_url(&self, url: &Url) -> Option<&Url> {
        let proxy = self.https.as_ref().filter(|_| url.scheme() == "https")?;
        let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let excluded = is_loopback(&host)
            || self
                .no_proxy
                .iter()
                .any(|entry| entry == "*" || host == *entry || host.ends_with(&format!(".{entry}")));
        (!excluded).then_some(proxy)
    }
}

/// A proxy URL fit to print: credentials in it are never shown.
pub fn without_credentials(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// host:port of a URL, for messages.
pub fn host(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
}

/// An error and its causes on one line, without reqwest's repetition of the URL.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        let text = text.split(" for url (").next().unwrap_or(&text).to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn proxies_only_for_https_beyond_loopback_and_no_proxy() {
        let proxies = Proxies {
            https: Some(Url::parse("http://user:pw@proxy.example:3128").unwrap()),
            no_proxy: vec!["internal.example".into()],
        };
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(proxies.for_url(&url("https://chatwoot.example.com/")).is_some());
        assert!(proxies.for_url(&url("http://chatwoot.example.com/")).is_none(), "cleartext never proxied");
        assert!(proxies.for_url(&url("https://127.0.0.1:3000/")).is_none());
        assert!(proxies.for_url(&url("https://[::1]/")).is_none());
        assert!(proxies.for_url(&url("https://localhost/")).is_none());
        assert!(proxies.for_url(&url("https://chat.internal.example/")).is_none());
        assert_eq!(without_credentials(proxies.https.as_ref().unwrap()), "http://proxy.example:3128/");
    }

    fn client() -> Client {
        let options = Options {
            connect_timeout: Duration::from_secs(5),
            idle_per_host: 0,
            tls: Tls::Verified { ca_file: None },
            keep_certificate: false,
        };
        Client::new(&options).unwrap()
    }

    /// What a request to `url` fails with, or None if it got an answer.
    fn failure(client: &Client, url: &str) -> Option<Failure> {
        let url = Url::parse(url).unwrap();
        let request = client.post(url.clone()).body("x");
        let answer = client.run(Duration::from_secs(5), request.send())?;
        answer.err().map(|e| client.failure(&url, &e))
    }

    #[test]
    fn failures_are_told_apart_by_type() {
        let client = client();
        // A port nobody listens on.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let kind = |url: &str| failure(&client, url).map(|f| f.kind);
        assert_eq!(kind(&format!("http://127.0.0.1:{port}/")), Some(Kind::Refused));
        // .invalid never resolves (RFC 6761).
        let dns = failure(&client, "http://no-such-host.invalid/").unwrap();
        assert_eq!(dns.kind, Kind::Dns);
        assert!(dns.detail.starts_with("cannot resolve no-such-host.invalid"), "{dns:?}");

        // A server that closes at once (not TLS), one that answers TLS with
        // cleartext, one that reads the request and closes without answering.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                match n {
                    0 => drop(stream),
                    1 => {
                        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                    }
                    _ => {
                        let _ = stream.read(&mut [0; 4096]);
                    }
                }
            }
        });
        assert_eq!(kind(&format!("https://{at}/")), Some(Kind::HandshakeEnded));
        assert_eq!(kind(&format!("https://{at}/")), Some(Kind::Tls));
        assert_eq!(kind(&format!("http://{at}/")), Some(Kind::Lost));
    }

    #[test]
    fn a_wait_ends_at_its_limit() {
        let client = client();
        assert_eq!(client.run(Duration::from_millis(50), std::future::pending::<()>()), None);
        assert_eq!(client.run(Duration::from_secs(1), async { 7 }), Some(7));
    }
}
