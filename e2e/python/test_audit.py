"""The audit log (`--audit-log FILE`): one JSON line per request with the key ARN and the outcome,
and no plaintext anywhere the engine writes."""

import base64
import os
import uuid

import pytest
from botocore.exceptions import ClientError

from kubekms_e2e import DEFAULT_ACCOUNT, key_arn


def request_id(response_or_error):
    meta = response_or_error.response["ResponseMetadata"] if isinstance(response_or_error, ClientError) \
        else response_or_error["ResponseMetadata"]
    return meta["RequestId"]


def test_one_audit_line_per_request(engine, kms, kms_raw):
    key_id = kms.create_key(Description="audited")["KeyMetadata"]["KeyId"]
    arn = key_arn(key_id)
    expected = {}  # request id -> (operation, key ARN or None, error code or None)

    out = kms.encrypt(KeyId=key_id, Plaintext=b"audited plaintext")
    expected[request_id(out)] = ("Encrypt", arn, None)
    blob = out["CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=blob)
    expected[request_id(out)] = ("Decrypt", arn, None)
    out = kms.describe_key(KeyId=key_id)
    expected[request_id(out)] = ("DescribeKey", arn, None)
    out = kms.list_keys(Limit=1)
    expected[request_id(out)] = ("ListKeys", None, None)

    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"wrong": "secret-context-value"})
    refused_with_context = request_id(e.value)
    expected[refused_with_context] = ("Decrypt", arn, "InvalidCiphertextException")
    kms.disable_key(KeyId=key_id)
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=b"refused")
    expected[request_id(e.value)] = ("Encrypt", arn, "DisabledException")
    missing = str(uuid.uuid4())
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId=missing)
    expected[request_id(e.value)] = ("DescribeKey", None, "NotFoundException")
    with pytest.raises(ClientError) as e:
        kms_raw.encrypt(KeyId=key_id, Plaintext=os.urandom(4097))
    expected[request_id(e.value)] = ("Encrypt", None, "ValidationException")

    lines = engine.wait_for_audit(expected)
    assert set(lines) == set(expected), "some requests have no audit line"
    for rid, (operation, want_arn, code) in expected.items():
        assert len(lines[rid]) == 1, f"{operation} {rid} logged {len(lines[rid])} times"
        line = lines[rid][0]
        assert line["operation"] == operation
        assert line["principal"] == f"arn:aws:iam::{DEFAULT_ACCOUNT}:root"
        assert line["sourceIp"] == "127.0.0.1"
        assert line["time"].endswith("Z")
        if want_arn is not None:
            assert line["keyArn"] == want_arn, line
        if code is None:
            assert line["outcome"] == "success", line
            assert line["errorCode"] is None
        else:
            assert line["outcome"] == "failure", line
            assert line["errorCode"] == code, line
    # The encryption context's keys are audited, allowed or refused; its values never are.
    refused = lines[refused_with_context][0]
    assert refused["encryptionContextKeys"] == ["wrong"], refused
    assert "secret-context-value" not in engine.audit_path.read_text()


def test_unauthenticated_requests_are_audited_as_failures(engine):
    good = engine.secret_access_key
    try:
        engine.secret_access_key = "x" * 40
        bad = engine.client()
    finally:
        engine.secret_access_key = good
    with pytest.raises(ClientError) as e:
        bad.list_keys()
    rid = request_id(e.value)
    lines = engine.wait_for_audit([rid])
    assert len(lines.get(rid, [])) == 1
    assert lines[rid][0]["outcome"] == "failure"
    assert lines[rid][0]["errorCode"] == e.value.response["Error"]["Code"]


def test_plaintext_never_reaches_logs_or_data_dir(engine, kms, kms_raw):
    marker = f"KUBEKMS-PLAINTEXT-MARKER-{uuid.uuid4().hex}".encode()
    forms = [marker, base64.b64encode(marker)]
    key_id = kms.create_key(Description="leak check")["KeyMetadata"]["KeyId"]
    sign_key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    rids = []

    # Successful requests carrying the marker.
    out = kms.encrypt(KeyId=key_id, Plaintext=marker)
    rids.append(request_id(out))
    blob = out["CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=blob)
    assert out["Plaintext"] == marker
    rids.append(request_id(out))
    rids.append(request_id(kms.sign(KeyId=sign_key, Message=marker, SigningAlgorithm="ECDSA_SHA_256")))
    rids.append(request_id(kms.generate_mac(KeyId=mac_key, Message=marker, MacAlgorithm="HMAC_SHA_256")))
    rids.append(request_id(kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key_id)))

    # Failing requests carrying the marker: error paths are where values get echoed.
    failures = [
        lambda: kms_raw.encrypt(KeyId=key_id, Plaintext=marker * 72),  # 4104 bytes: too long
        lambda: kms_raw.encrypt(KeyId=key_id, Plaintext=marker, EncryptionAlgorithm="RSAES_OAEP_SHA_256"),
        lambda: kms_raw.encrypt(KeyId=str(uuid.uuid4()), Plaintext=marker),
        lambda: kms.verify_mac(KeyId=mac_key, Message=marker, MacAlgorithm="HMAC_SHA_256", Mac=b"\x00" * 32),
        lambda: kms.verify(KeyId=sign_key, Message=marker, Signature=b"\x30\x00", SigningAlgorithm="ECDSA_SHA_256"),
        lambda: kms_raw.sign(KeyId=sign_key, Message=marker, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256"),
        lambda: kms_raw.decrypt(CiphertextBlob=marker),
    ]
    for call in failures:
        with pytest.raises(ClientError) as e:
            call()
        rids.append(request_id(e.value))
        for form in forms:
            assert form.decode() not in str(e.value.response), "an error message echoed the plaintext"
    kms.disable_key(KeyId=key_id)
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=marker)
    rids.append(request_id(e.value))

    lines = engine.wait_for_audit(rids)
    assert set(lines) == set(rids)

    searched = []
    files = list(engine.output_files())
    if engine.audit_path is not None:
        files.append(engine.audit_path)
    files += [p for p in engine.data_dir.rglob("*") if p.is_file()]
    assert any(p.parent == engine.data_dir or engine.data_dir in p.parents for p in files), "data dir is empty"
    for path in files:
        data = path.read_bytes()
        searched.append(path.name)
        for form in forms:
            assert form not in data, f"plaintext marker found in {path}"
    assert engine.audit_path.name in searched
    # Positive control: the search does find what the audit log is meant to hold.
    assert key_arn(key_id).encode() in engine.audit_path.read_bytes()
    assert len(marker * 72) > 4096
