"""Key lifecycle through boto3: create, describe, list (paginated), description, enable/disable,
deletion windows, rotation, tags and key policies."""

import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from kubekms_e2e import DEFAULT_ACCOUNT, error_code, key_arn


def test_startup_banner_prints_endpoint_and_working_credentials(engine):
    out = engine.stdout_text()
    assert f"kubekms engine listening on {engine.endpoint}" in out
    # The export line is what a user pastes; the fixture took its credentials from it.
    assert engine.credentials_source == "stdout"
    assert f"AWS_ACCESS_KEY_ID={engine.access_key_id}" in out
    assert f"AWS_SECRET_ACCESS_KEY={engine.secret_access_key}" in out


def test_wrong_secret_is_refused(engine):
    good = engine.secret_access_key
    try:
        engine.secret_access_key = good[:-1] + ("A" if good[-1] != "A" else "B")
        bad = engine.client()
    finally:
        engine.secret_access_key = good
    with pytest.raises(ClientError) as e:
        bad.list_keys()
    assert error_code(e.value) in ("InvalidSignatureException", "UnrecognizedClientException")


def test_create_key_defaults_and_describe(kms, unique):
    before = time.time()
    meta = kms.create_key(Description=f"defaults {unique}")["KeyMetadata"]
    key_id = meta["KeyId"]
    uuid.UUID(key_id)
    assert meta["Arn"] == key_arn(key_id)
    assert meta["AWSAccountId"] == DEFAULT_ACCOUNT
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeyState"] == "Enabled"
    assert meta["Enabled"] is True
    assert meta["Origin"] == "AWS_KMS"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["MultiRegion"] is False
    assert meta["Description"] == f"defaults {unique}"
    assert abs(meta["CreationDate"].timestamp() - before) < 60

    for form in (key_id, meta["Arn"]):
        described = kms.describe_key(KeyId=form)["KeyMetadata"]
        assert described["KeyId"] == key_id
        assert described["Arn"] == meta["Arn"]
        assert described["Description"] == f"defaults {unique}"


@pytest.mark.parametrize(
    "spec,usage,field,expected",
    [
        ("RSA_2048", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]),
        ("RSA_3072", "SIGN_VERIFY", "SigningAlgorithms", None),
        ("ECC_NIST_P256", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_256"]),
        ("ECC_NIST_P384", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_384"]),
        ("ECC_NIST_P521", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_512"]),
        ("ECC_SECG_P256K1", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_256"]),
        ("HMAC_224", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_224"]),
        ("HMAC_512", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_512"]),
    ],
)
def test_create_key_specs(kms, spec, usage, field, expected):
    meta = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
    assert meta["KeySpec"] == spec
    assert meta["KeyUsage"] == usage
    if expected is None:
        assert set(meta[field]) == {
            "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
            "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
        }
    else:
        assert meta[field] == expected


def test_create_key_rejects_incompatible_usage_and_unknown_spec(kms, kms_raw):
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="ENCRYPT_DECRYPT")
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms_raw.create_key(KeySpec="RSA_1024")
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.create_key(MultiRegion=True)


def test_unknown_key_and_invalid_arn(kms):
    missing = str(uuid.uuid4())
    for form in (missing, key_arn(missing)):
        with pytest.raises(kms.exceptions.NotFoundException):
            kms.describe_key(KeyId=form)
        with pytest.raises(kms.exceptions.NotFoundException):
            kms.encrypt(KeyId=form, Plaintext=b"x")
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId="alias/e2e-no-such-alias")
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId="not-a-key-id")
    with pytest.raises(kms.exceptions.InvalidArnException):
        kms.describe_key(KeyId="arn:aws:kms:nonsense")


def test_keys_are_scoped_to_the_signing_region(engine, symmetric_key):
    """A client signing for another region is another KMS: it does not see the key."""
    other = engine.client(region="eu-west-1")
    with pytest.raises(other.exceptions.NotFoundException):
        other.describe_key(KeyId=symmetric_key["KeyId"])
    listed = [k["KeyId"] for k in other.get_paginator("list_keys").paginate().build_full_result()["Keys"]]
    assert symmetric_key["KeyId"] not in listed
    mine = other.create_key()["KeyMetadata"]
    assert mine["Arn"] == key_arn(mine["KeyId"], region="eu-west-1")


def test_list_keys_pagination_with_limit_and_marker(kms, kms_raw):
    created = {kms.create_key(Description="page")["KeyMetadata"]["KeyId"] for _ in range(5)}
    seen = []
    pages = 0
    marker = None
    while True:
        kwargs = {"Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_keys(**kwargs)
        pages += 1
        assert len(page["Keys"]) <= 2
        for k in page["Keys"]:
            assert k["KeyArn"] == key_arn(k["KeyId"])
        seen.extend(k["KeyId"] for k in page["Keys"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        assert len(page["Keys"]) == 2
        marker = page["NextMarker"]
    assert len(seen) == len(set(seen)), "a key was listed twice"
    assert created <= set(seen)
    assert pages >= 3

    everything = kms.list_keys(Limit=1000)
    assert not everything["Truncated"]
    assert sorted(k["KeyId"] for k in everything["Keys"]) == sorted(seen)

    # The boto3 paginator follows the same markers.
    via_paginator = [
        k["KeyId"]
        for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 3})
        for k in page["Keys"]
    ]
    assert sorted(via_paginator) == sorted(seen)

    with pytest.raises(kms.exceptions.InvalidMarkerException):
        kms.list_keys(Marker="%%%not-a-marker%%%")
    with pytest.raises(ClientError) as e:
        kms_raw.list_keys(Limit=0)
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms_raw.list_keys(Limit=1001)
    assert error_code(e.value) == "ValidationException"


def test_update_key_description(kms, symmetric_key):
    kms.update_key_description(KeyId=symmetric_key["Arn"], Description="changed")
    assert kms.describe_key(KeyId=symmetric_key["KeyId"])["KeyMetadata"]["Description"] == "changed"
    kms.update_key_description(KeyId=symmetric_key["KeyId"], Description="")
    assert kms.describe_key(KeyId=symmetric_key["KeyId"])["KeyMetadata"]["Description"] == ""


def test_disable_and_enable(kms, symmetric_key):
    key_id = symmetric_key["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"before disable")["CiphertextBlob"]
    kms.disable_key(KeyId=key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Disabled" and meta["Enabled"] is False
    with pytest.raises(kms.exceptions.DisabledException):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with pytest.raises(kms.exceptions.DisabledException):
        kms.decrypt(CiphertextBlob=blob)
    with pytest.raises(kms.exceptions.DisabledException):
        kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    # Disabling twice is allowed, as in AWS.
    kms.disable_key(KeyId=key_id)
    kms.enable_key(KeyId=key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before disable"


def test_schedule_and_cancel_deletion(kms, kms_raw, symmetric_key):
    key_id = symmetric_key["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"doomed")["CiphertextBlob"]
    before = time.time()
    out = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert out["KeyId"] == key_arn(key_id)
    assert out["KeyState"] == "PendingDeletion"
    assert out["PendingWindowInDays"] == 7
    assert abs(out["DeletionDate"].timestamp() - (before + 7 * 86400)) < 120

    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert meta["Enabled"] is False
    assert meta["PendingDeletionWindowInDays"] == 7
    assert "DeletionDate" in meta
    # Still listed while the window runs.
    listed = [k["KeyId"] for k in kms.get_paginator("list_keys").paginate().build_full_result()["Keys"]]
    assert key_id in listed

    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.decrypt(CiphertextBlob=blob)
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.enable_key(KeyId=key_id)
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.update_key_description(KeyId=key_id, Description="no")
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    kms.cancel_key_deletion(KeyId=key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Disabled"
    assert "DeletionDate" not in meta
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.cancel_key_deletion(KeyId=key_id)
    kms.enable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"doomed"

    for days in (6, 31):
        with pytest.raises(ClientError) as e:
            kms_raw.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=days)
        assert error_code(e.value) == "ValidationException"


def test_rotation(kms, kms_raw, symmetric_key):
    key_id = symmetric_key["KeyId"]
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is False
    old_blob = kms.encrypt(KeyId=key_id, Plaintext=b"version one")["CiphertextBlob"]

    before = time.time()
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 90
    assert abs(status["NextRotationDate"].timestamp() - (before + 90 * 86400)) < 120

    assert kms.list_key_rotations(KeyId=key_id)["Rotations"] == []
    out = kms.rotate_key_on_demand(KeyId=key_id)
    assert out["KeyId"] == key_arn(key_id)
    rotations = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert len(rotations) == 1
    assert rotations[0]["RotationType"] == "ON_DEMAND"
    assert rotations[0]["KeyId"] == key_arn(key_id)
    kms.rotate_key_on_demand(KeyId=key_id)
    page = kms.list_key_rotations(KeyId=key_id, Limit=1)
    assert page["Truncated"] is True and len(page["Rotations"]) == 1
    rest = kms.list_key_rotations(KeyId=key_id, Limit=1, Marker=page["NextMarker"])
    assert rest["Truncated"] is False and len(rest["Rotations"]) == 1
    assert rest["Rotations"][0]["RotationDate"] >= page["Rotations"][0]["RotationDate"]

    # Old ciphertexts still decrypt; new ones are made with new material (and decrypt too).
    assert kms.decrypt(CiphertextBlob=old_blob)["Plaintext"] == b"version one"
    new_blob = kms.encrypt(KeyId=key_id, Plaintext=b"version three")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=new_blob)["Plaintext"] == b"version three"

    kms.disable_key_rotation(KeyId=key_id)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False

    with pytest.raises(ClientError) as e:
        kms_raw.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=89)
    assert error_code(e.value) == "ValidationException"

    asym = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.enable_key_rotation(KeyId=asym["KeyId"])
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.rotate_key_on_demand(KeyId=asym["KeyId"])
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.get_key_rotation_status(KeyId=asym["KeyId"])

    kms.disable_key(KeyId=key_id)
    with pytest.raises(kms.exceptions.DisabledException):
        kms.rotate_key_on_demand(KeyId=key_id)


def test_tags(kms, symmetric_key):
    key_id = symmetric_key["KeyId"]
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == []
    kms.tag_resource(
        KeyId=key_id,
        Tags=[{"TagKey": "team", "TagValue": "payments"}, {"TagKey": "env", "TagValue": "test"}],
    )
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}
    assert tags == {"team": "payments", "env": "test"}
    # Tagging an existing key overwrites its value.
    kms.tag_resource(KeyId=symmetric_key["Arn"], Tags=[{"TagKey": "env", "TagValue": "prod"}])
    kms.untag_resource(KeyId=key_id, TagKeys=["team"])
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}
    assert tags == {"env": "prod"}

    page = kms.create_key(Tags=[{"TagKey": f"k{i}", "TagValue": str(i)} for i in range(3)])
    tagged = page["KeyMetadata"]["KeyId"]
    first = kms.list_resource_tags(KeyId=tagged, Limit=2)
    assert first["Truncated"] is True and len(first["Tags"]) == 2
    second = kms.list_resource_tags(KeyId=tagged, Limit=2, Marker=first["NextMarker"])
    assert second["Truncated"] is False
    assert {t["TagKey"] for t in first["Tags"] + second["Tags"]} == {"k0", "k1", "k2"}

    with pytest.raises(kms.exceptions.TagException):
        kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.tag_resource(KeyId=str(uuid.uuid4()), Tags=[{"TagKey": "a", "TagValue": "b"}])


def test_key_policies(kms, symmetric_key):
    key_id = symmetric_key["KeyId"]
    assert kms.list_key_policies(KeyId=key_id)["PolicyNames"] == ["default"]
    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    principals = [s["Principal"]["AWS"] for s in policy["Statement"]]
    assert f"arn:aws:iam::{DEFAULT_ACCOUNT}:root" in principals

    custom = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "e2e",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{DEFAULT_ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(custom))
    assert json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]) == custom

    with pytest.raises(kms.exceptions.MalformedPolicyDocumentException):
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy="{not json")
    with pytest.raises(kms.exceptions.MalformedPolicyDocumentException):
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy='{"Version": "2012-10-17"}')
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.get_key_policy(KeyId=key_id, PolicyName="other")

