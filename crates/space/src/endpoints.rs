//! `endpoints.allow`: the hosts and networks subscribers may point at, enforced on the address
//! of every new connection ([`EndpointPolicy::check_address`], called by the handler with the
//! address the host name resolved to), whoever added the subscriber and however it was
//! restored. Unset, every address is allowed except link-local ones (cloud metadata services
//! live there) and unspecified ones, which need an explicit entry.

use std::net::IpAddr;

/// One rule: a host name (case-insensitive), an address, or a network in CIDR notation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Host(String),
    Net(IpAddr, u8),
}

/// The hosts and networks subscribers may point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Vec<Rule>);

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl AllowList {
    /// Parses rules such as `hooks.example.com`, `10.0.0.0/8`, `::1`, `127.0.0.1`.
    pub fn parse(rules: &[String]) -> Result<AllowList, String> {
        let mut out = Vec::new();
        for r in rules {
            let r = r.trim();
            if let Some((addr, len)) = r.split_once('/') {
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("{r:?}: not an address/prefix"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("{r:?}: prefix length must be 0..={max}"))?;
                out.push(Rule::Net(ip, len));
            } else if let Ok(ip) = r.parse::<IpAddr>() {
                out.push(Rule::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else if !r.is_empty() && !r.contains(char::is_whitespace) {
                out.push(Rule::Host(r.to_ascii_lowercase()));
            } else {
                return Err(format!("{r:?}: not a host, an address or a network"));
            }
        }
        Ok(AllowList(out))
    }

    /// Whether `host`, a name, is listed (case-insensitive, exact).
    fn allows_host(&self, host: &str) -> bool {
        self.0
            .iter()
            .any(|rule| matches!(rule, Rule::Host(h) if h.eq_ignore_ascii_case(host)))
    }

    fn has_networks(&self) -> bool {
        self.0.iter().any(|rule| matches!(rule, Rule::Net(..)))
    }

    /// Whether `ip` is in a listed address or network.
    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|rule| match rule {
            Rule::Net(net, len) if net.is_ipv4() == ip.is_ipv4() => {
                let width = if ip.is_ipv4() { 32 } else { 128 };
                let shift = 128 - u32::from(*len) - (128 - width);
                let keep = if u32::from(*len) == 0 {
                    0
                } else {
                    u128::MAX << (shift + (128 - width))
                };
                bits(*net) & keep == bits(ip) & keep
            }
            _ => false,
        })
    }
}

/// What a subscriber may connect to: `endpoints.allow` if set, else everything but
/// link-local and unspecified addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    allow: Option<AllowList>,
}

impl EndpointPolicy {
    pub fn new(allow: Option<AllowList>) -> EndpointPolicy {
        EndpointPolicy { allow }
    }

    /// Whether a new connection for an endpoint whose host is `host` may go to `ip` (an
    /// IPv4-mapped IPv6 address counts as the IPv4 one). The error says why not.
    pub fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match &self.allow {
            Some(list) if list.allows_host(host) || list.allows_ip(ip) => Ok(()),
            Some(_) => Err(format!("{host} ({ip}) is not allowed by endpoints.allow")),
            None if is_link_local(ip) || ip.is_unspecified() => Err(format!(
                "{host} ({ip}) is a link-local or unspecified address: it needs an endpoints.allow entry"
            )),
            None => Ok(()),
        }
    }

    /// Whether an endpoint can ever be connected to, known from its URL alone: an address
    /// literal must pass [`EndpointPolicy::check_address`]; a host name must be listed, unless
    /// the list has networks its addresses may fall in (then only connecting tells).
    pub fn check_endpoint(&self, endpoint: &str) -> Result<(), String> {
        let Some(host) = host_of(endpoint) else {
            return Err(format!("{endpoint:?} has no host"));
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_address(host, ip);
        }
        match &self.allow {
            Some(list) if !list.allows_host(host) && !list.has_networks() => {
                Err(format!("{host} is not allowed by endpoints.allow"))
            }
            _ => Ok(()),
        }
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The host of an absolute http(s) URL: no user info, no port, no brackets.
pub fn host_of(endpoint: &str) -> Option<&str> {
    let rest = endpoint.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(authority.split(':').next().unwrap_or(authority)).filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rules: &[&str]) -> AllowList {
        AllowList::parse(&rules.iter().map(|r| r.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn hosts_addresses_and_networks() {
        let p = EndpointPolicy::new(Some(list(&[
            "Hooks.Example.com",
            "10.0.0.0/8",
            "::1",
            "192.168.1.7",
        ])));
        let ok = |host: &str, addr: &str| p.check_address(host, ip(addr)).is_ok();
        assert!(
            ok("hooks.example.com", "203.0.113.9"),
            "a listed name, wherever it resolves"
        );
        assert!(ok("HOOKS.example.com", "203.0.113.9"));
        assert!(!ok("evil.example.com", "203.0.113.9"));
        assert!(
            ok("internal.example", "10.1.2.3"),
            "a name resolving into a listed network"
        );
        assert!(!ok("11.1.2.3", "11.1.2.3"));
        assert!(ok("::1", "::1"));
        assert!(!ok("::2", "::2"));
        assert!(ok("192.168.1.7", "192.168.1.7"));
        assert!(!ok("192.168.1.8", "192.168.1.8"));
        assert!(!ok("127.0.0.1", "127.0.0.1"), "loopback only when listed");
        assert!(
            ok("x", "::ffff:10.0.0.1"),
            "IPv4-mapped IPv6 is the IPv4 address"
        );
        let all = EndpointPolicy::new(Some(list(&["0.0.0.0/0"])));
        assert!(all.check_address("x", ip("8.8.8.8")).is_ok());
        let ula = EndpointPolicy::new(Some(list(&["fd00::/8"])));
        assert!(ula.check_address("x", ip("fd12::1")).is_ok());
    }

    #[test]
    fn unset_allows_all_but_link_local_and_unspecified() {
        let p = EndpointPolicy::default();
        for good in ["127.0.0.1", "10.0.0.1", "8.8.8.8", "::1", "fd00::1"] {
            assert!(p.check_address("h", ip(good)).is_ok(), "{good}");
        }
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "::ffff:0.0.0.0",
        ] {
            let why = p.check_address("h", ip(bad)).unwrap_err();
            assert!(why.contains("endpoints.allow"), "{bad}: {why}");
        }
        // An explicit entry lets one through.
        let p = EndpointPolicy::new(Some(list(&["169.254.169.254"])));
        assert!(p.check_address("h", ip("169.254.169.254")).is_ok());
    }

    #[test]
    fn what_a_url_alone_tells() {
        let names_only = EndpointPolicy::new(Some(list(&["hooks.example.com"])));
        assert!(
            names_only
                .check_endpoint("https://hooks.example.com/x")
                .is_ok()
        );
        assert!(
            names_only
                .check_endpoint("https://evil.example.com/x")
                .is_err()
        );
        assert!(names_only.check_endpoint("http://10.0.0.1/").is_err());
        let with_nets = EndpointPolicy::new(Some(list(&["10.0.0.0/8"])));
        assert!(
            with_nets
                .check_endpoint("https://internal.example/x")
                .is_ok()
        );
        assert!(with_nets.check_endpoint("http://10.0.0.1:9/").is_ok());
        assert!(with_nets.check_endpoint("http://11.0.0.1:9/").is_err());
        assert!(
            EndpointPolicy::default()
                .check_endpoint("http://[fe80::1]/")
                .is_err()
        );
        assert!(
            EndpointPolicy::default()
                .check_endpoint("http://example.com/")
                .is_ok()
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in ["10.0.0.0/33", "::/129", "1.2.3.4/x", "", "a b"] {
            assert!(AllowList::parse(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }
}
