//! A refused tool call as a JSON-RPC error: the one rendering of the gate's [`Refusal`] for
//! MCP, as the draft and mppx 0.11 map them.
//!
//! | refusal | code | `error.data` |
//! |---|---|---|
//! | no credential | `-32042` | `{httpStatus: 402, challenges, problem}` |
//! | malformed credential, invalid payload | `-32602` | `{httpStatus, challenges, problem}` |
//! | any other payer-side refusal (tampered, expired, replayed, not paid) | `-32043` | `{httpStatus, challenges, problem, failure: {reason, detail}}` |
//! | infrastructure down, misconfiguration | `-32603` | `{httpStatus: 503/500, challenges: [], problem, retryAfter?}` |
//!
//! `challenges` are fresh and present only where the problem calls for paying again (a
//! failure that paying again cannot fix carries none, so mppx, which pays again on `-32043`,
//! stops there).

use mpp_core::gate::{Refusal, RefusalReason};
use mpp_core::mcp::{
    INTERNAL_ERROR_CODE, MALFORMED_CREDENTIAL_CODE, McpChallenge, McpFailure,
    PAYMENT_REQUIRED_CODE, PaymentRequiredData, VERIFICATION_FAILED_CODE,
};
use mpp_core::problem::ProblemType;
use rmcp::ErrorData;
use rmcp::model::ErrorCode;
use serde_json::Value;

/// The JSON-RPC code of a refusal.
pub(crate) fn refusal_code(refusal: &Refusal) -> i64 {
    match refusal.reason() {
        RefusalReason::Problem(ProblemType::PaymentRequired) => PAYMENT_REQUIRED_CODE,
        RefusalReason::Problem(ProblemType::MalformedCredential | ProblemType::InvalidPayload) => {
            MALFORMED_CREDENTIAL_CODE
        }
        RefusalReason::Problem(_) => VERIFICATION_FAILED_CODE,
        _ => INTERNAL_ERROR_CODE,
    }
}

/// The JSON-RPC error of a refusal (see the module docs).
pub(crate) fn refusal_error(refusal: &Refusal) -> ErrorData {
    let code = refusal_code(refusal);
    let problem = refusal.to_problem();
    let failure = (code == VERIFICATION_FAILED_CODE).then(|| McpFailure {
        reason: refusal.problem_type().map(|p| p.code().to_owned()),
        detail: Some(refusal.detail().to_owned()),
    });
    let message = problem.title.clone();
    let data = PaymentRequiredData {
        http_status: refusal.status(),
        challenges: refusal
            .challenges()
            .iter()
            .map(McpChallenge::from)
            .collect(),
        problem: Some(problem),
        failure,
    };
    // Plain strings, integers and maps: this always serializes.
    let mut data = serde_json::to_value(&data).unwrap_or(Value::Null);
    if let (Some(retry_after), Some(object)) = (refusal.retry_after(), data.as_object_mut()) {
        object.insert("retryAfter".into(), retry_after.into());
    }
    ErrorData::new(json_rpc_code(code), message, Some(data))
}

/// The codes above fit an `i32`, as JSON-RPC codes do.
fn json_rpc_code(code: i64) -> ErrorCode {
    ErrorCode(i32::try_from(code).unwrap_or(ErrorCode::INTERNAL_ERROR.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpp_core::{Challenge, EncodedJson};
    use serde_json::json;

    fn challenge() -> Challenge {
        let request = EncodedJson::from_value(json!({"amount": "10000"})).unwrap();
        Challenge::builder_encoded("api.example.com", "tempo", "charge", request)
            .expires("2030-01-01T00:00:00.000Z")
            .with_id("id-1")
    }

    #[test]
    fn each_refusal_has_its_code() {
        let c = vec![challenge()];
        let code = |p| refusal_code(&Refusal::problem(p, "x", c.clone()));
        assert_eq!(code(ProblemType::PaymentRequired), -32042);
        assert_eq!(code(ProblemType::MalformedCredential), -32602);
        assert_eq!(code(ProblemType::InvalidPayload), -32602);
        assert_eq!(code(ProblemType::InvalidChallenge), -32043);
        assert_eq!(code(ProblemType::PaymentExpired), -32043);
        assert_eq!(code(ProblemType::VerificationFailed), -32043);
        assert_eq!(refusal_code(&Refusal::unavailable()), -32603);
        assert_eq!(refusal_code(&Refusal::misconfigured()), -32603);
    }

    #[test]
    fn payment_required_carries_the_challenges_as_objects() {
        let refusal = Refusal::problem(
            ProblemType::PaymentRequired,
            "Payment is required.",
            vec![challenge()],
        );
        let error = refusal_error(&refusal);
        assert_eq!(error.code.0, -32042);
        assert_eq!(error.message, "Payment Required");
        let data = error.data.unwrap();
        assert_eq!(data["httpStatus"], 402);
        assert_eq!(data["challenges"][0]["request"], json!({"amount": "10000"}));
        assert_eq!(data["problem"]["challengeId"], "id-1");
        assert!(data.get("failure").is_none());
    }

    #[test]
    fn a_failure_says_why_and_an_outage_when_to_retry() {
        let refusal = Refusal::problem(ProblemType::PaymentExpired, "expired", vec![challenge()]);
        let data = refusal_error(&refusal).data.unwrap();
        assert_eq!(
            data["failure"],
            json!({"reason": "payment-expired", "detail": "expired"})
        );
        let error = refusal_error(&Refusal::unavailable());
        let data = error.data.unwrap();
        assert_eq!((error.code.0, &data["httpStatus"]), (-32603, &json!(503)));
        assert_eq!(data["retryAfter"], 1);
        assert_eq!(data["challenges"], json!([]));
    }
}
