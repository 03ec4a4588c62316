//! `pay`: request an MPP-protected URL, paying its `402` with a Tempo key, and print what
//! happened (the challenge, the payment, the receipt, the body).
//!
//! Run with `scripts/demo.sh` (which also starts a node and a paid API), or:
//!
//! ```text
//! cargo run -p mpp-example-pay -- http://127.0.0.1:3000/fortune
//! cargo run -p mpp-example-pay -- --help
//! ```

use anyhow::Context as _;
use mpp_reqwest::PaymentClient;
use mpp_tempo::client::TempoPayer;

/// Dev account 0 of `anvil --network tempo` (a public test key: never hold real funds with it).
const DEV_PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const DEFAULT_RPC_URL: &str = "http://127.0.0.1:8545";

const HELP: &str = "\
pay: request a URL and pay its 402 Payment Required with a Tempo key

USAGE:
    pay [OPTIONS] [URL]

ARGS:
    URL                     what to request [default: http://127.0.0.1:3000/fortune]

OPTIONS:
    -X, --request <METHOD>  HTTP method [default: GET, or POST with --data]
    -d, --data <BODY>       request body (sent again, unchanged, with the payment)
    -H, --header <H: V>     an extra request header (repeatable)
        --rpc-url <URL>     the Tempo node the payer signs against [env: TEMPO_RPC_URL]
                            [default: http://127.0.0.1:8545]
        --key <HEX>         the payer's private key [env: PAYER_KEY]
                            [default: dev account 0 of the local node]
    -h, --help              print this help

The payer needs a balance of the token the server asks for (pathUSD on a local node: every
dev account has some). Exit status: 0 when the paid request answered 2xx with a receipt.
";

/// What the command line asks for.
struct Args {
    url: String,
    method: Option<String>,
    data: Option<String>,
    headers: Vec<(String, String)>,
    rpc_url: String,
    key: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut parsed = Args {
        url: "http://127.0.0.1:3000/fortune".into(),
        method: None,
        data: None,
        headers: Vec::new(),
        rpc_url: std::env::var("TEMPO_RPC_URL").unwrap_or_else(|_| DEFAULT_RPC_URL.into()),
        key: std::env::var("PAYER_KEY").unwrap_or_else(|_| DEV_PAYER_KEY.into()),
    };
    let mut url = None;
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .with_context(|| format!("{flag} needs a value (see --help)"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "-X" | "--request" => parsed.method = Some(value(&arg)?),
            "-d" | "--data" => parsed.data = Some(value(&arg)?),
            "-H" | "--header" => {
                let header = value(&arg)?;
                let (name, value) = header
                    .split_once(':')
                    .with_context(|| format!("header `{header}` is not `Name: value`"))?;
                parsed
                    .headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "--rpc-url" => parsed.rpc_url = value(&arg)?,
            "--key" => parsed.key = value(&arg)?,
            flag if flag.starts_with('-') => {
                anyhow::bail!("unknown option `{flag}` (see --help)")
            }
            _ if url.is_some() => anyhow::bail!("more than one URL given (see --help)"),
            _ => url = Some(arg),
        }
    }
    if let Some(url) = url {
        parsed.url = url;
    }
    Ok(Some(parsed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        print!("{HELP}");
        return Ok(());
    };
    let url = reqwest::Url::parse(&args.url)
        .with_context(|| format!("`{}` is not an absolute URL (see --help)", args.url))?;
    let signer = args
        .key
        .trim()
        .trim_start_matches("0x")
        .parse()
        .context("--key / PAYER_KEY: expected a 32-byte hex private key")?;
    let payer = TempoPayer::new(signer, &args.rpc_url)
        .with_context(|| format!("--rpc-url / TEMPO_RPC_URL `{}`", args.rpc_url))?;
    println!("payer {} pays {url}", payer.address());

    let client = PaymentClient::new(reqwest::Client::new(), payer);
    let method = match (&args.method, &args.data) {
        (Some(method), _) => method.parse().context("--request: not an HTTP method")?,
        (None, Some(_)) => reqwest::Method::POST,
        (None, None) => reqwest::Method::GET,
    };
    let mut request = client.http().request(method, url.clone());
    for (name, value) in &args.headers {
        request = request.header(name, value);
    }
    if let Some(data) = &args.data {
        request = request.body(data.clone());
    }

    let started = std::time::Instant::now();
    let paid = client.send(request).await?;
    let status = paid.response.status();
    let Some(payment) = paid.payment else {
        println!("{url} did not ask for payment: {status}");
        println!("body: {}", paid.response.text().await?);
        return Ok(());
    };
    let c = &payment.challenge;
    println!(
        "402 challenge: id={} realm={} method={} intent={} amount={} expires={}",
        c.id,
        c.realm,
        c.method,
        c.intent,
        c.request.value()["amount"],
        c.expires.as_deref().unwrap_or("-")
    );
    println!("paid retry -> {status} in {:?}", started.elapsed());
    match &payment.receipt {
        Some(r) => println!(
            "Payment-Receipt: status={} method={} reference(tx)={} timestamp={}",
            r.status, r.method, r.reference, r.timestamp
        ),
        None => println!("no Payment-Receipt"),
    }
    println!("body: {}", paid.response.text().await?);
    anyhow::ensure!(
        status.is_success() && payment.receipt.is_some(),
        "payment did not go through"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Option<Args>> {
        parse_args(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn help_is_not_a_url() {
        assert!(matches!(parse(&["--help"]), Ok(None)));
        assert!(matches!(parse(&["-h", "http://x"]), Ok(None)));
    }

    #[test]
    fn flags_and_url() -> anyhow::Result<()> {
        let args = parse(&["-d", "q=1", "-H", "X-Trace: abc", "http://api/search"])?
            .context("not help")?;
        assert_eq!(args.url, "http://api/search");
        assert_eq!(args.data.as_deref(), Some("q=1"));
        assert_eq!(args.headers, [("X-Trace".to_owned(), "abc".to_owned())]);
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["a", "b"]).is_err());
        assert!(parse(&["--key"]).is_err());
        Ok(())
    }
}
