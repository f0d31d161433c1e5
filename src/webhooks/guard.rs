//! Where a webhook may point: `http` or `https`, and (unless the operator
//! sets `webhooks.allow_private_networks`) only public addresses. The
//! check runs when the webhook is created and again when each attempt
//! connects: the connector's resolver drops every address that is not
//! public, so a name that resolves elsewhere later (DNS rebinding) reaches
//! nothing.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// Whether an address is one a webhook may reach without the operator's
/// leave: not loopback, private, link-local, shared (CGNAT), unspecified,
/// multicast, broadcast, documentation or benchmarking space, nor an IPv6
/// unique-local or an IPv4-mapped form of one of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            // Forms that carry an IPv4 address a translator or tunnel
            // reaches: judged by that address.
            if s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
                return public_v4(embedded(s[6], s[7])); // IPv4-compatible ::a.b.c.d
            }
            if s[0] == 0x0064 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
                return public_v4(embedded(s[6], s[7])); // NAT64 64:ff9b::/96, 64:ff9b:1::/48
            }
            if s[0] == 0x2002 {
                return public_v4(embedded(s[1], s[2])); // 6to4
            }
            let first = s[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0 // site local (deprecated)
                || (first == 0x2001 && s[1] == 0x0000) // Teredo
                || (first == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1))
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240)
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The host and port of an `http(s)` URL, or why it is not one.
pub fn target(url: &str) -> Result<(http::uri::Scheme, String, u16), Refused> {
    let uri: http::Uri = url.parse().map_err(|_| Refused("is not a URL".into()))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| Refused("has no scheme".into()))?;
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(Refused("must start with http:// or https://".into())),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Refused("has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if url.contains('@') && uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Refused("must not carry credentials".into()));
    }
    Ok((scheme, host, uri.port_u16().unwrap_or(default_port)))
}

/// Checks a URL as the worker will reach it: its scheme, and every address
/// its host resolves to (a name that resolves to no public address is
/// refused).
pub async fn check(url: &str, allow_private: bool) -> Result<(), Refused> {
    let (_, host, port) = target(url)?;
    if allow_private {
        return Ok(());
    }
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| Refused(format!("host {host:?} does not resolve")))?
        .collect();
    if addresses.is_empty() {
        return Err(Refused(format!("host {host:?} does not resolve")));
    }
    if let Some(private) = addresses.iter().find(|a| !is_public(a.ip())) {
        return Err(Refused(format!(
            "resolves to {}, a loopback, private or link-local address (the operator may allow these with webhooks.allow_private_networks)",
            private.ip()
        )));
    }
    Ok(())
}

/// The resolver the webhook client connects through: public addresses
/// only, unless private networks are allowed.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

type Addresses = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = Addresses;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addresses, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "no public address for the webhook's host",
                ));
            }
            Ok(found.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:5",
            "64:ff9b:1::a00:5",
            "::10.0.0.5",
            "2002:a00:5::1",
            "fec0::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_need_http_and_a_host() {
        assert!(target("ftp://example.com/x").is_err());
        assert!(target("example.com").is_err());
        assert!(target("https://user:pw@example.com/").is_err());
        assert_eq!(
            target("https://example.com/hook").unwrap().1,
            "example.com".to_string()
        );
        assert_eq!(target("http://[::1]:8080/").unwrap().1, "::1".to_string());
        assert_eq!(target("http://[::1]:8080/").unwrap().2, 8080);
    }
}
