//! The gRPC client: one lazily (re)connecting channel shared by every call,
//! with the agent's credentials on each request.

use std::time::Duration;

use kiln_proto::v1::agent_client::AgentClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::{AgentConfig, AgentError, InProcessDial};

pub(crate) type Client = AgentClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization` and `x-kiln-agent` to every call.
#[derive(Clone)]
pub(crate) struct Auth {
    authorization: MetadataValue<Ascii>,
    agent: MetadataValue<Ascii>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        metadata.insert("x-kiln-agent", self.agent.clone());
        Ok(request)
    }
}

/// A client that connects on first use and again after the server went
/// away, so a restart of the server never needs a new client.
pub(crate) fn client(config: &AgentConfig) -> Result<Client, AgentError> {
    let auth = auth(config)?;
    if let Some(dial) = &config.in_process {
        return Ok(AgentClient::with_interceptor(
            in_process(dial.clone()),
            auth,
        ));
    }
    check_scheme(&config.server)?;
    let invalid = |why: String| AgentError::InvalidServer(config.server.clone(), why);
    let mut endpoint =
        Endpoint::from_shared(config.server.clone()).map_err(|e| invalid(e.to_string()))?;
    if endpoint.uri().scheme_str() == Some("https") {
        let mut tls = ClientTlsConfig::new();
        tls = match &config.ca_cert {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &config.client_identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| invalid(format!("TLS: {}", innermost(&e))))?;
    } else if !config.insecure
        && let Some(host) = endpoint.uri().host()
        && !is_loopback(host)
    {
        return Err(invalid(format!(
            "refusing to send the agent token in clear text to `{host}`, which is not a \
             loopback address: use `https://` (the server's --tls-cert), or pass --insecure \
             to send it over a network you trust"
        )));
    }
    let endpoint = endpoint
        .connect_timeout(config.connect_timeout)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        // HTTP/2 pings notice a server that vanished without closing the
        // connection (a crashed machine), which TCP alone may take hours to.
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(AgentClient::with_interceptor(endpoint.connect_lazy(), auth))
}

fn auth(config: &AgentConfig) -> Result<Auth, AgentError> {
    let authorization = format!("Bearer {}", config.token)
        .parse::<MetadataValue<Ascii>>()
        .map_err(|_| AgentError::InvalidMetadata("token"))?;
    let agent = config
        .name
        .parse::<MetadataValue<Ascii>>()
        .map_err(|_| AgentError::InvalidMetadata("name"))?;
    Ok(Auth {
        authorization,
        agent,
    })
}

/// A channel whose every connection is a new in-memory pipe to the server
/// in this process; the URI only names it for HTTP/2.
fn in_process(dial: InProcessDial) -> Channel {
    /// Enough for a log chunk in flight without many wake-ups per chunk.
    const PIPE_BYTES: usize = 256 * 1024;
    Endpoint::from_static("http://in-process.kiln.invalid").connect_with_connector_lazy(
        tower::service_fn(move |_: tonic::transport::Uri| {
            let dial = dial.clone();
            async move {
                let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
                dial.send(theirs).await.map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the server has stopped")
                })?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(ours))
            }
        }),
    )
}

/// An address without `http://` or `https://` would be taken by the
/// transport as something else and fail on every call, saying nothing.
fn check_scheme(server: &str) -> Result<(), AgentError> {
    let invalid = |why: String| Err(AgentError::InvalidServer(server.to_string(), why));
    match server.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(()),
        Some((scheme, _)) if scheme != "http" && scheme != "https" => invalid(format!(
            "unknown scheme `{scheme}://`: expected `http://` (or `https://` for TLS)"
        )),
        Some(_) => invalid("no host: expected `http://HOST:PORT`".into()),
        None => invalid(format!(
            "no scheme: expected the server's gRPC address as `http://HOST:PORT` \
             (`https://` for TLS), e.g. `http://{server}`"
        )),
    }
}

/// Whether `host` (of a URL: IPv6 in brackets) is this machine: 127.0.0.0/8,
/// `::1` or `localhost`. Names are not resolved: one that resolves to
/// loopback today may not tomorrow.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The last cause of `error`, which says what is wrong with a file.
fn innermost(error: &dyn std::error::Error) -> String {
    let mut error = error;
    while let Some(source) = error.source() {
        error = source;
    }
    error.to_string()
}

/// Whether a failed call about a task means the task is no longer ours.
pub(crate) fn is_lost(status: &Status) -> bool {
    matches!(status.code(), Code::PermissionDenied | Code::NotFound)
}

/// Whether trying again later may succeed: transport failures and server
/// trouble, not a refusal of the request itself.
pub(crate) fn is_retriable(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::PermissionDenied
            | Code::NotFound
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::Unimplemented
    )
}

/// A short account of a failed call for logs: the message and, for
/// transport failures, the underlying cause (e.g. "Connection refused").
pub(crate) fn describe(status: &Status) -> String {
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(error) = cause {
        innermost = Some(error);
        cause = error.source();
    }
    match innermost {
        Some(error) => format!("{}: {error}", status.message()),
        None if status.message().is_empty() => format!("{:?}", status.code()),
        None => status.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_is_this_machine_only() {
        for host in ["127.0.0.1", "127.8.9.10", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "10.255.255.1",
            "[::2]",
            "localhost.example.com",
            "example.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
