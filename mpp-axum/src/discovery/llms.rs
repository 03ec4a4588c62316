//! `/llms.txt`: the paid endpoints, their prices and how to pay, in plain text for agents.

use super::document::PaidOperation;
use super::router::OPENAPI_PATH;
use mpp_core::discovery::PaymentOffer;
use std::fmt::Write as _;

/// How to pay, whatever the method: the MPP flow in a few lines.
const HOW_TO_PAY: &str = "\
## How to pay (MPP)

1. Send the request. A paid endpoint answers `402 Payment Required` with one \
`WWW-Authenticate: Payment` challenge per offer: its `method`, `intent`, and terms in `request` \
(base64url JSON: the amount in base units, the currency, the recipient...).
2. Pay one challenge with its method. A `charge` is paid once per request; a `session` opens a \
payment channel once, then pays each unit with a signed voucher.
3. Send the request again with `Authorization: Payment <credential>` (base64url JSON echoing \
the challenge, with the proof of payment), or in the header the challenge names in `header`.
4. The answer carries a `Payment-Receipt` header. A refused payment gets `402` again, with a \
fresh challenge and an `application/problem+json` body saying why.

Clients that do all this: mppx (TypeScript; `npx mppx <url>`), the `mpp` crate and \
`mpp-reqwest` (Rust).
";

/// The text of `/llms.txt` for `paid`, under `title`.
pub(crate) fn render(title: &str, paid: &[PaidOperation]) -> String {
    let mut text = format!(
        "# {title}\n\n> Paid over the Machine Payments Protocol (MPP: HTTP 402 with \
         `WWW-Authenticate: Payment`). The OpenAPI document, with each price in \
         `x-payment-info`, is at {OPENAPI_PATH}. Prices here are advisory: the 402 challenge \
         is what you pay.\n\n## Paid endpoints\n\n"
    );
    if paid.is_empty() {
        text.push_str("None.\n");
    }
    for op in paid {
        let about = op
            .summary
            .as_deref()
            .or_else(|| op.info.offers.iter().find_map(|o| o.description.as_deref()));
        // Writing to a `String` cannot fail.
        let _ = match about {
            Some(about) => writeln!(text, "- {} {}: {about}", op.method, op.path),
            None => writeln!(text, "- {} {}", op.method, op.path),
        };
        for offer in &op.info.offers {
            let _ = writeln!(text, "  - {}", price_line(offer, op.price));
        }
    }
    text.push('\n');
    text.push_str(HOW_TO_PAY);
    text
}

/// `0.01 per request (10000 base units of 0x20c0…); method tempo, intent charge`.
fn price_line(offer: &PaymentOffer, price: Option<mpp_core::DecimalAmount>) -> String {
    let per = match (offer.intent.as_str(), offer.unit_type.as_deref()) {
        (_, Some(unit)) => unit,
        ("charge", None) => "request",
        _ => "unit",
    };
    let currency = offer.currency.as_deref();
    let of = currency.map(|c| format!(" of {c}")).unwrap_or_default();
    let amount = match (price, offer.amount.as_deref()) {
        (Some(price), Some(base)) => format!("{price} per {per} ({base} base units{of})"),
        (None, Some(base)) => format!("{base} base units{of} per {per}"),
        (_, None) => {
            let of = currency.map(|c| format!(", in {c}")).unwrap_or_default();
            let per = if offer.intent == "charge" {
                String::new()
            } else {
                format!(" per {per}")
            };
            format!("amount{per} computed for each request (its 402 states it){of}")
        }
    };
    format!(
        "{amount}; method `{}`, intent `{}`",
        offer.method, offer.intent
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mpp_core::discovery::PaymentInfo;

    fn op(path: &str, offer: PaymentOffer, price: Option<&str>) -> PaidOperation {
        PaidOperation {
            method: "GET",
            path: path.into(),
            summary: None,
            info: PaymentInfo::new(vec![offer]),
            price: price.map(|p| p.parse().unwrap()),
        }
    }

    #[test]
    fn lists_each_price_in_display_and_base_units() {
        let usd = "0x20c0000000000000000000000000000000000000";
        let fortune = PaymentOffer::new("charge", "tempo", Some(10_000))
            .with_currency(usd)
            .with_description("One fortune");
        let mut tokens = PaymentOffer::new("session", "tempo", Some(100)).with_currency(usd);
        tokens.unit_type = Some("token".into());
        let quote = PaymentOffer::new("charge", "tempo", None).with_currency(usd);
        let text = render(
            "paid-api",
            &[
                op("/fortune", fortune, Some("0.01")),
                op("/tokens", tokens, Some("0.0001")),
                op("/quote", quote, None),
            ],
        );
        assert!(text.starts_with("# paid-api\n"), "{text}");
        assert!(text.contains(&format!(
            "- GET /fortune: One fortune\n  - 0.01 per request (10000 base units of {usd}); \
             method `tempo`, intent `charge`\n"
        )));
        assert!(text.contains(&format!(
            "  - 0.0001 per token (100 base units of {usd}); method `tempo`, intent `session`"
        )));
        assert!(text.contains(&format!(
            "- GET /quote\n  - amount computed for each request (its 402 states it), in {usd}; \
             method `tempo`, intent `charge`"
        )));
        assert!(text.contains("Authorization: Payment <credential>"));
    }
}
