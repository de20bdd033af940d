//! `endpoints.allow`: the hosts and networks subscribers may point at. Unset, every
//! host is allowed, loopback included.

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

    /// Whether an endpoint URL's host is allowed.
    pub fn allows(&self, endpoint: &str) -> bool {
        let Some(host) = host_of(endpoint) else {
            return false;
        };
        let ip = host.parse::<IpAddr>().ok();
        self.0.iter().any(|rule| match (rule, ip) {
            (Rule::Host(h), None) => *h == host.to_ascii_lowercase(),
            (Rule::Net(net, len), Some(ip)) if net.is_ipv4() == ip.is_ipv4() => {
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

    #[test]
    fn hosts_addresses_and_networks() {
        let l = list(&["Hooks.Example.com", "10.0.0.0/8", "::1", "192.168.1.7"]);
        assert!(l.allows("https://hooks.example.com/x"));
        assert!(l.allows("http://user:pw@HOOKS.example.com:8443/x"));
        assert!(!l.allows("https://evil.example.com/x"));
        assert!(l.allows("http://10.1.2.3:80/"));
        assert!(!l.allows("http://11.1.2.3/"));
        assert!(l.allows("http://[::1]:9000/"));
        assert!(!l.allows("http://[::2]/"));
        assert!(l.allows("http://192.168.1.7/"));
        assert!(!l.allows("http://192.168.1.8/"));
        assert!(!l.allows("http://127.0.0.1/"), "loopback only when listed");
        assert!(list(&["0.0.0.0/0"]).allows("http://8.8.8.8/"));
        assert!(list(&["fd00::/8"]).allows("http://[fd12::1]/"));
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in ["10.0.0.0/33", "::/129", "1.2.3.4/x", "", "a b"] {
            assert!(AllowList::parse(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }
}
