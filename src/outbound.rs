//! Outbound HTTP to URLs that someone outside chose: a client's `callback_url`, a result
//! URL a provider's answer named. Such a URL must not reach the gateway's own network
//! (SSRF): a name is resolved once and every address it resolves to is checked, the
//! connection goes to a checked address (no second lookup that DNS rebinding could answer
//! differently), IP literals are checked before the request, and proxies from the
//! environment are not used. Plain http and internal addresses pass only when the caller
//! allows private targets. Used by `webhooks::client` and `results::copy`; it takes plain
//! parameters, so it depends on nothing else in the crate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// A client builder whose connections reach only checked addresses, with no proxy from
/// the environment. Callers add their redirect policy, timeouts and user agent.
pub fn client_builder(allow_private: bool) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver { allow_private }))
}

/// The scheme, and an IP literal's address (a name's addresses are checked when the
/// resolver looks them up). `what` names the URLs in the refusal ("callback URLs").
pub fn check_url(url: &Url, allow_private: bool, what: &str) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        other => return Err(format!("{other}: {what} must be https")),
    }
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(_)) => return Ok(()),
        None => return Err("the URL has no host".into()),
    };
    if !allow_private && is_internal(ip) {
        return Err(format!("{ip} is an internal address"));
    }
    Ok(())
}

/// Why a request was refused by the resolver, if it was: found by type among the request
/// error's sources.
pub fn internal_target(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(internal) = s.downcast_ref::<InternalTarget>() {
            return Some(internal.to_string());
        }
        source = s.source();
    }
    None
}

/// Resolves a name once and hands the connector only checked addresses.
struct CheckedResolver {
    allow_private: bool,
}

/// Why a name was refused; found again by type in the request error's sources.
#[derive(Debug, thiserror::Error)]
#[error("{name} resolves to an internal address ({ip})")]
struct InternalTarget {
    name: String,
    ip: IpAddr,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                // One internal address among public ones refuses them all: such a name is
                // built to reach inside.
                if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
                    return Err(Box::new(InternalTarget {
                        name: host,
                        ip: bad.ip(),
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is no client's public receiver: loopback, private, link-local, shared
/// (CGNAT), multicast, broadcast, unspecified, reserved, documentation, benchmarking and
/// cloud metadata addresses, and every IPv6 form that embeds or reaches an IPv4 one
/// internally (IPv4-mapped, IPv4-compatible, NAT64, 6to4). `ip_classes_are_classified`
/// below lists every class with an example.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, the metadata address 169.254.169.254 included
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || o[0] == 0 // "this network" 0/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10 (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved 240/4 and the broadcast address
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // An address that carries an IPv4 one is as internal as the IPv4 one it reaches.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4); // ::ffff:0:0/96, what dual-stack sockets connect to
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 64:ff9b::/96: the translator connects to the embedded IPv4 address.
        return is_internal_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4 2002::/16: the relay forwards to the IPv4 address in bits 16-48.
        return is_internal_v4(embedded(s[1], s[2]));
    }
    s[..6] == [0; 6] // ::/96: loopback, unspecified and the deprecated IPv4-compatible ::a.b.c.d
        || (s[..6] == [0, 0, 0, 0, 0xffff, 0]) // IPv4-translated ::ffff:0:0:0/96 (SIIT)
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || (s[..4] == [0x100, 0, 0, 0]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32: tunnels to an obfuscated IPv4
        || (s[0] == 0x2001 && s[1] == 0x2 && s[2] == 0) // benchmarking 2001:2::/48
        || (s[0] == 0x2001 && matches!(s[1] & 0xfff0, 0x10 | 0x20)) // ORCHID 2001:10::/28, 2001:20::/28
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (fd00:ec2::254 is in it)
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || ip.is_multicast() // ff00::/8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every address class, with the verdict: `true` internal, `false` a public receiver.
    const CLASSES: &[(&str, bool)] = &[
        // IPv4
        ("0.0.0.0", true),         // unspecified
        ("0.1.2.3", true),         // "this network" 0/8
        ("10.1.2.3", true),        // private 10/8
        ("100.64.0.1", true),      // shared CGNAT 100.64/10
        ("100.127.255.255", true), // its last address
        ("100.128.0.1", false),    // just past it
        ("127.0.0.1", true),       // loopback 127/8
        ("127.255.255.254", true), // anywhere in it
        ("169.254.169.254", true), // link-local, cloud metadata
        ("172.16.0.1", true),      // private 172.16/12
        ("172.31.255.255", true),  // its last address
        ("172.32.0.1", false),     // just past it
        ("192.0.0.8", true),       // IETF protocol assignments 192.0.0/24
        ("192.0.2.1", true),       // documentation TEST-NET-1
        ("192.168.1.1", true),     // private 192.168/16
        ("198.18.0.1", true),      // benchmarking 198.18/15
        ("198.19.255.255", true),  // its last address
        ("198.20.0.1", false),     // just past it
        ("198.51.100.7", true),    // documentation TEST-NET-2
        ("203.0.113.9", true),     // documentation TEST-NET-3
        ("224.0.0.1", true),       // multicast 224/4
        ("239.255.255.250", true), // multicast (SSDP)
        ("240.0.0.1", true),       // reserved 240/4
        ("255.255.255.255", true), // broadcast
        ("1.1.1.1", false),        // public
        ("8.8.8.8", false),        // public
        // IPv6
        ("::", true),                     // unspecified
        ("::1", true),                    // loopback
        ("::127.0.0.1", true),            // IPv4-compatible ::/96, loopback inside
        ("::10.0.0.1", true),             // IPv4-compatible, private inside
        ("::169.254.169.254", true),      // IPv4-compatible, metadata inside
        ("::8.8.8.8", true),              // IPv4-compatible is deprecated: never a receiver
        ("::ffff:127.0.0.1", true),       // IPv4-mapped ::ffff:0:0/96, loopback inside
        ("::ffff:169.254.169.254", true), // IPv4-mapped, metadata inside
        ("::ffff:0.0.0.0", true),         // IPv4-mapped, unspecified inside
        ("::ffff:8.8.8.8", false),        // IPv4-mapped, public inside
        ("::ffff:0:10.0.0.1", true),      // IPv4-translated ::ffff:0:0:0/96
        ("64:ff9b::127.0.0.1", true),     // NAT64, loopback inside
        ("64:ff9b::10.1.2.3", true),      // NAT64, private inside
        ("64:ff9b::a9fe:a9fe", true),     // NAT64, metadata inside
        ("64:ff9b::8.8.8.8", false),      // NAT64, public inside
        ("64:ff9b:1::8.8.8.8", true),     // local-use NAT64 64:ff9b:1::/48
        ("2002:7f00:1::1", true),         // 6to4, 127.0.0.1 inside
        ("2002:a9fe:a9fe::", true),       // 6to4, 169.254.169.254 inside
        ("2002:c0a8:101::1", true),       // 6to4, 192.168.1.1 inside
        ("2002:808:808::1", false),       // 6to4, 8.8.8.8 inside
        ("100::1", true),                 // discard-only 100::/64
        ("2001::1", true),                // Teredo 2001::/32
        ("2001:2::1", true),              // benchmarking 2001:2::/48
        ("2001:10::1", true),             // ORCHID 2001:10::/28
        ("2001:20::1", true),             // ORCHIDv2 2001:20::/28
        ("2001:db8::1", true),            // documentation 2001:db8::/32
        ("3fff::1", true),                // documentation 3fff::/20
        ("3fff:1000::1", false),          // just past it
        ("fc00::1", true),                // unique local fc00::/7
        ("fd00:ec2::254", true),          // unique local, AWS metadata
        ("fe80::1", true),                // link-local fe80::/10
        ("febf::1", true),                // its last /16
        ("fec0::1", true),                // site-local fec0::/10
        ("ff02::1", true),                // multicast ff00::/8
        ("ff0e::1", true),                // global-scope multicast
        ("2606:4700::1111", false),       // public
        ("2a00:1450:4001::200e", false),  // public
        ("2001:4860:4860::8888", false),  // public, in 2001::/16 but outside its special blocks
    ];

    #[test]
    fn ip_classes_are_classified() {
        let wrong: Vec<String> = CLASSES
            .iter()
            .filter(|(ip, internal)| is_internal(ip.parse().unwrap()) != *internal)
            .map(|(ip, internal)| {
                format!(
                    "{ip} should be {}",
                    if *internal { "internal" } else { "public" }
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
