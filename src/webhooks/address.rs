//! Where a webhook may be sent. An endpoint's URL is checked at registration, and every
//! address its host resolves to is checked again at each connection (DNS may have changed
//! since): loopback, private, link-local (cloud metadata at 169.254.169.254 among them),
//! carrier-grade NAT, unique-local, multicast and unspecified addresses are refused unless
//! `webhooks.allow_private_targets` is set, and `http://` is refused unless that flag or
//! `webhooks.allow_http` is.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::config::WebhookSettings;

/// Longest a registration waits for its host's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest URL an endpoint may have.
pub const URL_MAX_CHARS: usize = 2048;

/// Why a URL or address is refused, in both languages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub message_vi: String,
}

impl Refusal {
    fn new(message: impl Into<String>, message_vi: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            message_vi: message_vi.into(),
        }
    }
}

/// What targets the configuration allows.
#[derive(Debug, Clone, Copy)]
pub struct TargetPolicy {
    pub allow_private_targets: bool,
    pub allow_http: bool,
}

impl TargetPolicy {
    pub fn from_settings(settings: &WebhookSettings) -> TargetPolicy {
        TargetPolicy {
            allow_private_targets: settings.allow_private_targets,
            allow_http: settings.allow_http,
        }
    }
}

/// Checks a URL's form (scheme, host, no credentials, length) without resolving it.
pub fn parse_url(text: &str, policy: TargetPolicy) -> Result<Url, Refusal> {
    if text.chars().count() > URL_MAX_CHARS {
        return Err(Refusal::new(
            format!("the url is longer than {URL_MAX_CHARS} characters"),
            format!("url dài hơn {URL_MAX_CHARS} ký tự"),
        ));
    }
    let url = Url::parse(text).map_err(|error| {
        Refusal::new(
            format!("the url is not a valid absolute URL ({error})"),
            format!("url không phải là một URL tuyệt đối hợp lệ ({error})"),
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http || policy.allow_private_targets => {}
        "http" => {
            return Err(Refusal::new(
                "the url must use https (http:// is allowed only with webhooks.allow_http)",
                "url phải dùng https (chỉ cho phép http:// khi bật webhooks.allow_http)",
            ))
        }
        _ => {
            return Err(Refusal::new(
                "the url must use https",
                "url phải dùng https",
            ))
        }
    }
    if url.host_str().map_or(true, str::is_empty) {
        return Err(Refusal::new(
            "the url has no host",
            "url không có tên máy chủ",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::new(
            "the url must not carry credentials (user:password@)",
            "url không được chứa thông tin đăng nhập (user:password@)",
        ));
    }
    if url.fragment().is_some() {
        return Err(Refusal::new(
            "the url must not have a fragment (#...)",
            "url không được có phần phân đoạn (#...)",
        ));
    }
    Ok(url)
}

/// Resolves the URL's host and checks every address (registration).
pub async fn check_target(url: &Url, policy: TargetPolicy) -> Result<(), Refusal> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(address)) => vec![SocketAddr::new(IpAddr::V4(address), port)],
        Some(url::Host::Ipv6(address)) => vec![SocketAddr::new(IpAddr::V6(address), port)],
        Some(url::Host::Domain(name)) => {
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await
            {
                Ok(Ok(resolved)) => resolved.collect(),
                Ok(Err(_)) | Err(_) => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    if addresses.is_empty() {
        return Err(Refusal::new(
            "the url's host name does not resolve",
            "không phân giải được tên máy chủ của url",
        ));
    }
    if policy.allow_private_targets {
        return Ok(());
    }
    match addresses.iter().find(|address| !is_public(address.ip())) {
        Some(address) => Err(refused_address(address.ip())),
        None => Ok(()),
    }
}

fn refused_address(address: IpAddr) -> Refusal {
    Refusal::new(
        format!(
            "the url resolves to {address}, a loopback, private, link-local or otherwise \
             non-public address (allowed only with webhooks.allow_private_targets)"
        ),
        format!(
            "url trỏ tới {address}, một địa chỉ loopback, nội bộ, link-local hoặc không công khai \
             (chỉ cho phép khi bật webhooks.allow_private_targets)"
        ),
    )
}

/// An address on the public internet: not loopback, private, link-local, shared (CGNAT),
/// unique-local, multicast, broadcast, documentation or unspecified; an IPv4-mapped or NAT64
/// IPv6 address is judged by its IPv4 address.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            // 64:ff9b::/96, NAT64: the IPv4 address is in the last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., high, low] = segments;
                return is_public_v4(Ipv4Addr::from(((high as u32) << 16) | low as u32));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (segments[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || segments[0] == 0x2001 && segments[1] == 0x0db8 // documentation
                || segments[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
        }
    }
}

fn is_public_v4(address: Ipv4Addr) -> bool {
    let [first, second, ..] = address.octets();
    !(address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_documentation()
        || first == 0 // "this network"
        || (first == 100 && (64..128).contains(&second)) // shared address space (CGNAT)
        || (first == 192 && second == 0 && address.octets()[2] == 0) // IETF protocol assignments
        || (first == 198 && (18..20).contains(&second)) // benchmarking
        || first >= 240) // reserved
}

/// The delivery client's resolver: resolves as the system does, then refuses the connection
/// unless every address is public (or private targets are allowed). An IP literal in a URL
/// never reaches a resolver, so the sender checks those itself ([`check_literal`]).
pub struct CheckingResolver {
    pub policy: TargetPolicy,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !policy.allow_private_targets {
                if let Some(address) = resolved.iter().find(|address| !is_public(address.ip())) {
                    return Err(refused_address(address.ip()).message.into());
                }
            }
            let addresses: Addrs = Box::new(resolved.into_iter());
            Ok(addresses)
        })
    }
}

/// The resolver as the client builder takes it.
pub fn resolver(policy: TargetPolicy) -> Arc<CheckingResolver> {
    Arc::new(CheckingResolver { policy })
}

/// Checks a URL whose host is an IP literal (which no resolver sees) at send time.
pub fn check_literal(url: &Url, policy: TargetPolicy) -> Result<(), Refusal> {
    if policy.allow_private_targets {
        return Ok(());
    }
    let literal_opt = match url.host() {
        Some(url::Host::Ipv4(address)) => Some(IpAddr::V4(address)),
        Some(url::Host::Ipv6(address)) => Some(IpAddr::V6(address)),
        _ => None,
    };
    match literal_opt {
        Some(address) if !is_public(address) => Err(refused_address(address)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_private_targets: false,
        allow_http: false,
    };

    #[test]
    fn non_public_addresses_are_recognised() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(
                !is_public(text.parse().unwrap()),
                "{text} should not be public"
            );
        }
        for text in [
            "93.184.215.14",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(text.parse().unwrap()), "{text} should be public");
        }
    }

    #[test]
    fn url_forms_are_checked_before_any_lookup() {
        assert!(parse_url("https://hooks.example.com/scan", STRICT).is_ok());
        for text in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://user:secret@hooks.example.com/",
            "https://hooks.example.com/#part",
            "/relative",
            "not a url",
        ] {
            assert!(parse_url(text, STRICT).is_err(), "{text} should be refused");
        }
        let http_allowed = TargetPolicy {
            allow_private_targets: false,
            allow_http: true,
        };
        assert!(parse_url("http://hooks.example.com/", http_allowed).is_ok());
    }

    #[tokio::test]
    async fn private_literals_and_names_are_refused_unless_allowed() {
        let allowed = TargetPolicy {
            allow_private_targets: true,
            allow_http: false,
        };
        for text in [
            "https://127.0.0.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]:8443/",
            "https://localhost/",
        ] {
            let url = parse_url(text, STRICT).unwrap();
            assert!(check_target(&url, STRICT).await.is_err(), "{text}");
            assert!(check_target(&url, allowed).await.is_ok(), "{text}");
        }
        let literal = parse_url("https://10.0.0.1/", STRICT).unwrap();
        assert!(check_literal(&literal, STRICT).is_err());
        assert!(check_literal(&literal, allowed).is_ok());
    }
}
