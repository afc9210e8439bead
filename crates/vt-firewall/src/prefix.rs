//! CIDR prefixes as operators give them (`--egress-allow`, `--egress-deny`,
//! `--guest-ipv4-block`): parsed strictly, and checked for overlaps across every list
//! at start, so that a prefix is never both allowed and denied and no rule hides another.

use ipnet::IpNet;

/// A CIDR prefix: `10.0.0.0/8`, `2001:db8::/32`. No host bits, no bare address.
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if !s.contains('/') {
        return Err(format!("`{s}` is not a CIDR prefix: give its length too, like `{s}/32` or `10.0.0.0/8`"));
    }
    let net: IpNet =
        s.parse().map_err(|_| format!("`{s}` is not a CIDR prefix (like `10.0.0.0/8` or `2001:db8::/32`)"))?;
    if net.trunc() != net {
        return Err(format!("`{s}` has host bits set: did you mean `{}`?", net.trunc()));
    }
    Ok(net)
}

/// Two prefixes given to the server overlap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{flag_a} {a}` overlaps `{flag_b} {b}`: {}",
    if flag_a == flag_b { "give each prefix once (merge them into the larger one)" }
    else { "a prefix is one or the other, never both" }
)]
pub struct Overlap {
    pub flag_a: String,
    pub a: IpNet,
    pub flag_b: String,
    pub b: IpNet,
}

/// Check that no two prefixes of these named lists overlap (within a list or across lists).
pub fn check_overlaps(lists: &[(&str, &[IpNet])]) -> Result<(), Overlap> {
    let all: Vec<(&str, IpNet)> = lists.iter().flat_map(|(flag, nets)| nets.iter().map(move |n| (*flag, *n))).collect();
    for (i, (fa, a)) in all.iter().enumerate() {
        for (fb, b) in &all[i + 1..] {
            if a.contains(b) || b.contains(a) {
                return Err(Overlap { flag_a: fa.to_string(), a: *a, flag_b: fb.to_string(), b: *b });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| parse_prefix(s).unwrap()).collect()
    }

    #[test]
    fn prefixes_parse_strictly() {
        assert_eq!(parse_prefix(" 10.0.0.0/8 ").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_prefix("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        for (bad, says) in [
            ("10.0.0.1/8", "did you mean `10.0.0.0/8`"),
            ("10.0.0.0/33", "not a CIDR prefix"),
            ("10.0.0.1", "give its length too"),
            ("example.com/8", "not a CIDR prefix"),
            ("2001:db8::1/32", "did you mean `2001:db8::/32`"),
            ("", "not a CIDR prefix"),
        ] {
            let e = parse_prefix(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn overlaps_are_named_with_their_flags() {
        let allow = nets(&["10.0.5.0/24", "2001:db8::/32"]);
        let deny = nets(&["192.168.0.0/16", "10.0.0.0/8"]);
        let e = check_overlaps(&[("--egress-allow", &allow), ("--egress-deny", &deny)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`--egress-allow 10.0.5.0/24` overlaps `--egress-deny 10.0.0.0/8`: a prefix is one or the other, never both"
        );
        let twice = nets(&["10.0.0.0/8", "10.1.0.0/16"]);
        let e = check_overlaps(&[("--egress-deny", &twice)]).unwrap_err();
        assert!(e.to_string().contains("give each prefix once"), "{e}");
        let fine = nets(&["10.0.0.0/8", "11.0.0.0/8", "2001:db8::/32", "2001:db9::/32"]);
        check_overlaps(&[("--egress-deny", &fine), ("--egress-allow", &nets(&["192.0.2.0/24"]))]).unwrap();
        // An IPv4 prefix never overlaps an IPv6 one.
        check_overlaps(&[("a", &nets(&["0.0.0.0/0"])), ("b", &nets(&["::/0"]))]).unwrap();
    }
}
