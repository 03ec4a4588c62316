//! `Accept-Payment` negotiation: which offers a client prefers, in which order.
//!
//! ```
//! use mpp_core::accept_payment::AcceptPayment;
//!
//! let accept: AcceptPayment = "tempo/*, stripe/charge;q=0.5, solana/*;q=0".parse().unwrap();
//! let offers = [("stripe", "charge"), ("solana", "charge"), ("tempo", "session")];
//! // solana is refused (q=0); tempo ranks first.
//! assert_eq!(accept.rank(offers), vec![2, 0]);
//! ```

use std::str::FromStr;

/// The request header name.
pub const ACCEPT_PAYMENT: &str = "accept-payment";

/// A malformed `Accept-Payment` value (servers then fall back to every offer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Accept-Payment value")]
pub struct AcceptPaymentError;

/// One `method/intent;q=` range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRange {
    /// Method id or `*`.
    pub method: String,
    /// Intent or `*`.
    pub intent: String,
    /// Quality in thousandths (0..=1000).
    pub q: u16,
}

impl PaymentRange {
    fn matches(&self, method: &str, intent: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && (self.intent == "*" || self.intent.eq_ignore_ascii_case(intent))
    }

    fn specificity(&self) -> u8 {
        u8::from(self.method != "*") + u8::from(self.intent != "*")
    }
}

/// A parsed `Accept-Payment` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcceptPayment {
    /// The ranges in header order.
    pub ranges: Vec<PaymentRange>,
}

fn parse_q(s: &str) -> Option<u16> {
    // 0, 1, 0.x, 0.xx, 0.xxx, 1.0, 1.00, 1.000
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
    {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl FromStr for AcceptPayment {
    type Err = AcceptPaymentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ranges = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = entry.split(';').map(str::trim);
            let range = parts.next().ok_or(AcceptPaymentError)?;
            let (method, intent) = range.split_once('/').ok_or(AcceptPaymentError)?;
            if !(method == "*" || is_token(method)) || !(intent == "*" || is_token(intent)) {
                return Err(AcceptPaymentError);
            }
            let mut q = 1000;
            for param in parts {
                let (name, value) = param.split_once('=').ok_or(AcceptPaymentError)?;
                if name.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(value.trim()).ok_or(AcceptPaymentError)?;
                }
            }
            ranges.push(PaymentRange {
                method: method.to_ascii_lowercase(),
                intent: intent.to_ascii_lowercase(),
                q,
            });
        }
        if ranges.is_empty() {
            return Err(AcceptPaymentError);
        }
        Ok(Self { ranges })
    }
}

impl AcceptPayment {
    /// The quality the client gives an offer: that of the most specific matching range
    /// (the first such range on a tie), or `None` if no range matches.
    pub fn quality(&self, method: &str, intent: &str) -> Option<u16> {
        let mut best: Option<&PaymentRange> = None;
        for r in self.ranges.iter().filter(|r| r.matches(method, intent)) {
            if best.is_none_or(|b| r.specificity() > b.specificity()) {
                best = Some(r);
            }
        }
        best.map(|r| r.q)
    }

    /// Orders `offers` (method, intent) by the client's preference and returns their indices:
    /// offers with q=0 or unmatched are dropped, ties keep server order. If nothing would
    /// remain, every offer is returned in server order.
    pub fn rank<'a>(&self, offers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<usize> {
        let offers: Vec<(&str, &str)> = offers.into_iter().collect();
        let mut ranked: Vec<(usize, u16)> = offers
            .iter()
            .enumerate()
            .filter_map(|(i, (m, it))| self.quality(m, it).filter(|q| *q > 0).map(|q| (i, q)))
            .collect();
        if ranked.is_empty() {
            return (0..offers.len()).collect();
        }
        ranked.sort_by_key(|r| std::cmp::Reverse(r.1)); // stable: server order on ties
        ranked.into_iter().map(|(i, _)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_range_wins() {
        let a: AcceptPayment = "*/*;q=0.1, tempo/*;q=0.5, tempo/session".parse().unwrap();
        assert_eq!(a.quality("tempo", "session"), Some(1000));
        assert_eq!(a.quality("tempo", "charge"), Some(500));
        assert_eq!(a.quality("stripe", "charge"), Some(100));
    }

    #[test]
    fn falls_back_to_all_offers() {
        let a: AcceptPayment = "lightning/*".parse().unwrap();
        assert_eq!(
            a.rank([("tempo", "charge"), ("stripe", "charge")]),
            vec![0, 1]
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "tempo",
            "tempo/charge;q=2",
            "tempo/charge;q=0.1234",
            "te mpo/charge",
            "tempo/charge;q",
        ] {
            assert!(bad.parse::<AcceptPayment>().is_err(), "{bad}");
        }
    }
}
