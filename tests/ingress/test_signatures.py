import base64
import hashlib
import hmac

import pytest

from gateway.errors import ConfigError, SignatureRejected
from gateway.signatures import HitlVerifier, StandardWebhooksVerifier, sign_hitl, sign_standard

SECRET = "s3cret-one"
BODY = b'{"event":"request.completed","timestamp":"2026-11-30T09:16:05Z","data":{}}\n'


def hitl_headers(signature: str) -> dict[str, str]:
    return {"X-HITL-Signature": signature}


def test_hitl_valid_signature_passes():
    HitlVerifier([SECRET]).verify(BODY, hitl_headers(sign_hitl(BODY, SECRET)))


def test_hitl_signature_matches_openssl_style_hex():
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign_hitl(BODY, SECRET) == expected


def test_hitl_wrong_secret_rejected():
    with pytest.raises(SignatureRejected, match="does not match"):
        HitlVerifier([SECRET]).verify(BODY, hitl_headers(sign_hitl(BODY, "other-secret")))


def test_hitl_second_rotated_secret_accepted():
    verifier = HitlVerifier(["old-secret", "new-secret"])
    verifier.verify(BODY, hitl_headers(sign_hitl(BODY, "new-secret")))
    verifier.verify(BODY, hitl_headers(sign_hitl(BODY, "old-secret")))


def test_hitl_sha256_prefix_accepted():
    HitlVerifier([SECRET]).verify(BODY, hitl_headers("sha256=" + sign_hitl(BODY, SECRET)))
    HitlVerifier([SECRET]).verify(BODY, hitl_headers("SHA256=" + sign_hitl(BODY, SECRET)))


def test_hitl_upper_case_hex_accepted():
    HitlVerifier([SECRET]).verify(BODY, hitl_headers(sign_hitl(BODY, SECRET).upper()))


def test_hitl_one_changed_byte_rejected():
    signature = sign_hitl(BODY, SECRET)
    tampered = BODY.replace(b"completed", b"completes")
    with pytest.raises(SignatureRejected):
        HitlVerifier([SECRET]).verify(tampered, hitl_headers(signature))


def test_hitl_missing_header_rejected():
    with pytest.raises(SignatureRejected, match="missing X-HITL-Signature"):
        HitlVerifier([SECRET]).verify(BODY, {})


def test_hitl_non_hex_signature_rejected():
    with pytest.raises(SignatureRejected, match="not a hex"):
        HitlVerifier([SECRET]).verify(BODY, hitl_headers("zz-not-hex"))


@pytest.mark.parametrize(
    "body",
    [
        '{"event":"request.completed","data":{"name":"Rézo Ünal 審査"}}'.encode(),
        b'{"event":"request.completed","data":{"name":"R\\u00e9zo \\u5be9\\u67fb"}}',
        b'{"event":"request.completed","data":{}}\n',
    ],
    ids=["non-ascii", "unicode-escapes", "trailing-newline"],
)
def test_hitl_verified_over_raw_bytes(body):
    verifier = HitlVerifier([SECRET])
    verifier.verify(body, hitl_headers(sign_hitl(body, SECRET)))

    # The same event re-encoded (escapes decoded, newline stripped) is different bytes
    # and must not pass with the original signature.
    reencoded = body.decode("unicode_escape").encode("utf-8", "surrogatepass").rstrip(b"\n") + b" "
    with pytest.raises(SignatureRejected):
        verifier.verify(reencoded, hitl_headers(sign_hitl(body, SECRET)))


def test_hitl_timestamp_outside_tolerance_rejected():
    verifier = HitlVerifier([SECRET], timestamp_header="X-HITL-Timestamp", tolerance_s=300, clock=lambda: 10_000.0)
    headers = {"X-HITL-Signature": sign_hitl(BODY, SECRET), "X-HITL-Timestamp": str(10_000 - 301)}
    with pytest.raises(SignatureRejected, match="tolerance"):
        verifier.verify(BODY, headers)


def test_hitl_timestamp_inside_tolerance_accepted():
    verifier = HitlVerifier([SECRET], timestamp_header="X-HITL-Timestamp", tolerance_s=300, clock=lambda: 10_000.0)
    headers = {"X-HITL-Signature": sign_hitl(BODY, SECRET), "X-HITL-Timestamp": str(10_000 - 299)}
    verifier.verify(BODY, headers)


def test_hitl_missing_timestamp_rejected_when_configured():
    verifier = HitlVerifier([SECRET], timestamp_header="X-HITL-Timestamp")
    with pytest.raises(SignatureRejected, match="missing X-HITL-Timestamp"):
        verifier.verify(BODY, {"X-HITL-Signature": sign_hitl(BODY, SECRET)})


def test_verifier_without_secrets_is_config_error():
    with pytest.raises(ConfigError, match="HITL_WEBHOOK_SECRETS"):
        HitlVerifier([])


STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-32byt").decode()
OTHER_STANDARD_SECRET = "whsec_" + base64.b64encode(b"another-standard-webhooks-key-32").decode()


def standard_headers(signature: str, message_id: str = "msg_1", timestamp: int = 1_700_000_000) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_standard_webhooks_valid():
    verifier = StandardWebhooksVerifier([STANDARD_SECRET], clock=lambda: 1_700_000_010.0)
    verifier.verify(BODY, standard_headers(sign_standard(BODY, STANDARD_SECRET, "msg_1", 1_700_000_000)))


def test_standard_webhooks_expired():
    verifier = StandardWebhooksVerifier([STANDARD_SECRET], tolerance_s=300, clock=lambda: 1_700_000_000.0 + 301)
    signature = sign_standard(BODY, STANDARD_SECRET, "msg_1", 1_700_000_000)
    with pytest.raises(SignatureRejected, match="tolerance"):
        verifier.verify(BODY, standard_headers(signature))


def test_standard_webhooks_multi_signature_one_valid():
    verifier = StandardWebhooksVerifier([STANDARD_SECRET], clock=lambda: 1_700_000_000.0)
    wrong = sign_standard(BODY, OTHER_STANDARD_SECRET, "msg_1", 1_700_000_000)
    right = sign_standard(BODY, STANDARD_SECRET, "msg_1", 1_700_000_000)
    verifier.verify(BODY, standard_headers(f"v1a,ignored {wrong} {right}"))


def test_standard_webhooks_multi_signature_none_valid():
    verifier = StandardWebhooksVerifier([STANDARD_SECRET], clock=lambda: 1_700_000_000.0)
    wrong = sign_standard(BODY, OTHER_STANDARD_SECRET, "msg_1", 1_700_000_000)
    with pytest.raises(SignatureRejected, match="no v1 entry"):
        verifier.verify(BODY, standard_headers(f"{wrong} v1,bm90LWEtc2lnbmF0dXJl"))


def test_standard_webhooks_signature_bound_to_message_id():
    verifier = StandardWebhooksVerifier([STANDARD_SECRET], clock=lambda: 1_700_000_000.0)
    signature = sign_standard(BODY, STANDARD_SECRET, "msg_1", 1_700_000_000)
    with pytest.raises(SignatureRejected):
        verifier.verify(BODY, standard_headers(signature, message_id="msg_2"))


def test_standard_webhooks_rotated_secrets():
    verifier = StandardWebhooksVerifier([OTHER_STANDARD_SECRET, STANDARD_SECRET], clock=lambda: 1_700_000_000.0)
    verifier.verify(BODY, standard_headers(sign_standard(BODY, STANDARD_SECRET, "msg_1", 1_700_000_000)))


def test_standard_webhooks_missing_header():
    verifier = StandardWebhooksVerifier([STANDARD_SECRET])
    with pytest.raises(SignatureRejected, match="missing webhook-id"):
        verifier.verify(BODY, {"webhook-timestamp": "1", "webhook-signature": "v1,xx"})


def test_standard_webhooks_bad_secret_is_config_error():
    with pytest.raises(ConfigError, match="whsec_"):
        StandardWebhooksVerifier(["whsec_not base64!"])
