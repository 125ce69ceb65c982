//! Which provider endpoints the schema refuses, as CEL rules on `AIProvider.spec.baseUrl`.
//!
//! A base URL must not lead into the node or the cloud's control plane: loopback, unspecified, link-local and
//! multicast addresses, the cloud metadata services (AWS, GCP, Azure, Oracle and OpenStack at 169.254.169.254,
//! AWS over IPv6 at fd00:ec2::254, Alibaba at 100.100.100.200, Azure's wire server at 168.63.129.16), IPv6
//! forms that embed an IPv4 address (IPv4-compatible, NAT64, 6to4, Teredo), the host names that resolve to
//! them, and the cluster's own API server. The chat service checks the address it connects to again, whatever
//! DNS answers: these rules only refuse what can be known from the text.
//!
//! Every spelling counts. The schema's pattern admits only lower-case DNS names and bracketed IPv6 literals
//! (no user info, percent escapes, backslashes or Unicode, which URL parsers normalise into other hosts), and a
//! host whose last label is a number is an IPv4 address to every URL parser (`2852039166`, `0xa9.0376.43518`,
//! `169.254.43518`): such a host must be the canonical dotted quad, which the address rules then check.
//!
//! `cel.bind` is not available in CRD rules, and the cost estimator sizes `url(...).getHostname()` as
//! unbounded, so the host is cut out of the (length-bounded) string with `split` in each rule.

/// The pattern of a base URL: `http(s)://`, a lower-case DNS name or a bracketed IPv6 address, an optional
/// port, an optional path; no user info, query or fragment.
pub const BASE_URL_PATTERN: &str = r"^https?://([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*|\[[0-9a-fA-F:.]+\])(:[0-9]{1,5})?(/[^\s?#]*)?$";

/// Address ranges no provider endpoint may be in.
pub const FORBIDDEN_RANGES: [&str; 17] = [
    // "This network": 0.0.0.0 reaches the node itself on Linux.
    "0.0.0.0/8",
    "127.0.0.0/8",
    // Link-local, with the metadata service of AWS, GCP, Azure, Oracle and OpenStack at 169.254.169.254.
    "169.254.0.0/16",
    // Alibaba Cloud's metadata service.
    "100.100.100.200/32",
    // Azure's wire server.
    "168.63.129.16/32",
    // Oracle Cloud's legacy metadata address.
    "192.0.0.192/32",
    // Multicast, reserved and broadcast.
    "224.0.0.0/3",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
    // AWS's metadata service over IPv6 (fd00:ec2::254) and its neighbours.
    "fd00:ec2::/32",
    // IPv6 forms that carry an IPv4 address: IPv4-compatible, NAT64 (well-known and local-use), 6to4, Teredo.
    "::/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "2002::/16",
    "2001::/32",
];

/// Host names of metadata services and of the cluster's API server. `*.localhost` and
/// `kubernetes.default.svc.<cluster domain>` are refused too.
pub const FORBIDDEN_HOSTS: [&str; 10] = [
    "localhost",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
];

/// An in-cluster Service host: `<service>.<namespace>.svc`, optionally followed by the cluster domain. (`[.]`
/// rather than `\.`: the pattern stands inside a CEL string, where `\.` is not an escape.)
pub const IN_CLUSTER_HOST_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?[.][a-z0-9]([-a-z0-9]*[a-z0-9])?[.]svc([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// CEL: the authority (`host[:port]`) of `self.baseUrl`, which the schema's pattern has already shaped.
fn authority() -> String {
    "self.baseUrl.split('/')[2]".to_string()
}

/// CEL: the host of `self.baseUrl`, without the brackets of an IPv6 literal.
fn host() -> String {
    let a = authority();
    format!("({a}.startsWith('[') ? {a}.substring(1, {a}.indexOf(']')) : {a}.split(':')[0])")
}

fn cel_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|item| format!("'{item}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// CEL: a host whose last label is a number must be a canonical dotted-quad IPv4 address.
pub fn numeric_host_rule() -> String {
    let h = host();
    format!(
        "!has(self.baseUrl) || !{h}.matches('(^|[.])(0x[0-9a-f]*|[0-9]+)$') || (isIP({h}) && ip({h}).family() == 4)"
    )
}

/// CEL: a bracketed host must be an IPv6 address the IP library accepts (it refuses IPv4-mapped ones).
pub fn ipv6_literal_rule() -> String {
    format!("!has(self.baseUrl) || !{}.startsWith('[') || isIP({})", authority(), host())
}

/// CEL: an IP host must be outside every forbidden range.
pub fn forbidden_range_rule() -> String {
    let h = host();
    let ranges = cel_list(FORBIDDEN_RANGES);
    format!("!has(self.baseUrl) || !isIP({h}) || !{ranges}.exists(range, cidr(range).containsIP({h}))")
}

/// CEL: a host name must not be a metadata service's or the API server's.
pub fn forbidden_host_rule() -> String {
    let h = host();
    let hosts = cel_list(FORBIDDEN_HOSTS);
    format!(
        "!has(self.baseUrl) || !({h} in {hosts} || {h}.endsWith('.localhost') || {h}.startsWith('kubernetes.default.svc.'))"
    )
}

/// CEL: `allowInsecure` only for a base URL whose host is a Service of the cluster.
pub fn insecure_in_cluster_rule() -> String {
    format!("!self.allowInsecure || (has(self.baseUrl) && {}.matches('{IN_CLUSTER_HOST_PATTERN}'))", host())
}
