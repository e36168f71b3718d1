"""HMAC keys and aliases through boto3."""

import uuid

import pytest
from botocore.exceptions import ClientError

from kubekms_e2e import alias_arn, error_code, key_arn

MAC_SPECS = {"HMAC_224": 28, "HMAC_256": 32, "HMAC_384": 48, "HMAC_512": 64}


@pytest.mark.parametrize("spec", list(MAC_SPECS))
def test_generate_and_verify_mac(kms, spec):
    alg = spec.replace("HMAC_", "HMAC_SHA_")
    key_id = kms.create_key(KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    out = kms.generate_mac(KeyId=key_id, Message=b"authenticate me", MacAlgorithm=alg)
    assert out["KeyId"] == key_arn(key_id)
    assert out["MacAlgorithm"] == alg
    assert len(out["Mac"]) == MAC_SPECS[spec]
    # HMAC is deterministic: the same message gives the same tag, another message another.
    assert kms.generate_mac(KeyId=key_id, Message=b"authenticate me", MacAlgorithm=alg)["Mac"] == out["Mac"]
    assert kms.generate_mac(KeyId=key_id, Message=b"authenticate you", MacAlgorithm=alg)["Mac"] != out["Mac"]
    ok = kms.verify_mac(KeyId=key_id, Message=b"authenticate me", MacAlgorithm=alg, Mac=out["Mac"])
    assert ok["MacValid"] is True and ok["KeyId"] == key_arn(key_id)


def test_bad_macs_are_rejected(kms, kms_raw):
    key_id = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    mac = kms.generate_mac(KeyId=key_id, Message=b"msg", MacAlgorithm="HMAC_SHA_256")["Mac"]
    with pytest.raises(kms.exceptions.KMSInvalidMacException):
        kms.verify_mac(KeyId=key_id, Message=b"msh", MacAlgorithm="HMAC_SHA_256", Mac=mac)
    for pos in (0, 15, 31):
        bad = bytearray(mac)
        bad[pos] ^= 0x80
        with pytest.raises(kms.exceptions.KMSInvalidMacException):
            kms.verify_mac(KeyId=key_id, Message=b"msg", MacAlgorithm="HMAC_SHA_256", Mac=bytes(bad))
    with pytest.raises(kms.exceptions.KMSInvalidMacException):
        kms.verify_mac(KeyId=key_id, Message=b"msg", MacAlgorithm="HMAC_SHA_256", Mac=mac[:16])
    other = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    with pytest.raises(kms.exceptions.KMSInvalidMacException):
        kms.verify_mac(KeyId=other, Message=b"msg", MacAlgorithm="HMAC_SHA_256", Mac=mac)
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.generate_mac(KeyId=key_id, Message=b"msg", MacAlgorithm="HMAC_SHA_512")
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.generate_mac(KeyId=sym, Message=b"msg", MacAlgorithm="HMAC_SHA_256")
    with pytest.raises(ClientError) as e:
        kms_raw.generate_mac(KeyId=key_id, Message=b"x" * 4097, MacAlgorithm="HMAC_SHA_256")
    assert error_code(e.value) == "ValidationException"
    kms.disable_key(KeyId=key_id)
    with pytest.raises(kms.exceptions.DisabledException):
        kms.generate_mac(KeyId=key_id, Message=b"msg", MacAlgorithm="HMAC_SHA_256")


def test_alias_lifecycle(kms, unique):
    first = kms.create_key(Description="alias first")["KeyMetadata"]
    second = kms.create_key(Description="alias second")["KeyMetadata"]
    name = f"alias/e2e/{unique}"
    kms.create_alias(AliasName=name, TargetKeyId=first["Arn"])

    listed = {a["AliasName"]: a for a in kms.list_aliases(KeyId=first["KeyId"])["Aliases"]}
    assert set(listed) == {name}
    assert listed[name]["AliasArn"] == alias_arn(name)
    assert listed[name]["TargetKeyId"] == first["KeyId"]
    assert "CreationDate" in listed[name]

    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == first["KeyId"]
    assert kms.describe_key(KeyId=alias_arn(name))["KeyMetadata"]["KeyId"] == first["KeyId"]
    blob = kms.encrypt(KeyId=name, Plaintext=b"via alias")["CiphertextBlob"]

    with pytest.raises(kms.exceptions.AlreadyExistsException):
        kms.create_alias(AliasName=name, TargetKeyId=second["KeyId"])

    # Re-pointing: new encryptions use the new key, old ciphertexts still decrypt.
    kms.update_alias(AliasName=name, TargetKeyId=second["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == second["KeyId"]
    out = kms.encrypt(KeyId=name, Plaintext=b"via alias again")
    assert out["KeyId"] == key_arn(second["KeyId"])
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"] == key_arn(first["KeyId"])
    assert kms.list_aliases(KeyId=first["KeyId"])["Aliases"] == []
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=second["KeyId"])["Aliases"]] == [name]

    # An alias only moves between keys of the same spec and usage.
    signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    with pytest.raises(ClientError) as e:
        kms.update_alias(AliasName=name, TargetKeyId=signing["KeyId"])
    assert error_code(e.value) == "ValidationException"

    # Several aliases may name one key.
    extra = f"alias/e2e/{unique}-2"
    kms.create_alias(AliasName=extra, TargetKeyId=second["KeyId"])
    names = sorted(a["AliasName"] for a in kms.list_aliases(KeyId=second["KeyId"])["Aliases"])
    assert names == sorted([name, extra])

    kms.delete_alias(AliasName=name)
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId=name)
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.delete_alias(AliasName=name)
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.update_alias(AliasName=name, TargetKeyId=second["KeyId"])
    # The name is free again.
    kms.create_alias(AliasName=name, TargetKeyId=first["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == first["KeyId"]


def test_invalid_alias_names(kms, symmetric_key):
    key_id = symmetric_key["KeyId"]
    with pytest.raises(kms.exceptions.InvalidAliasNameException):
        kms.create_alias(AliasName="alias/aws/e2e-reserved", TargetKeyId=key_id)
    for bad in ("no-prefix", "alias/", "alias/has space", "alias/semi;colon"):
        with pytest.raises(ClientError) as e:
            kms.create_alias(AliasName=bad, TargetKeyId=key_id)
        assert error_code(e.value) in ("ValidationException", "InvalidAliasNameException"), bad
    # An alias cannot name an alias or an unknown key.
    name = f"alias/e2e-target-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.create_alias(AliasName=name + "-x", TargetKeyId=name)
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.create_alias(AliasName=name + "-y", TargetKeyId=str(uuid.uuid4()))
    # Management operations take key ids and ARNs, not aliases.
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.disable_key(KeyId=name)


def test_alias_on_key_pending_deletion(kms, symmetric_key, unique):
    kms.schedule_key_deletion(KeyId=symmetric_key["KeyId"], PendingWindowInDays=7)
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.create_alias(AliasName=f"alias/e2e-doomed-{unique}", TargetKeyId=symmetric_key["KeyId"])


def test_list_aliases_pagination(kms, unique):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    names = [f"alias/e2e-page-{unique}-{i}" for i in range(5)]
    for n in names:
        kms.create_alias(AliasName=n, TargetKeyId=key_id)

    seen = []
    marker = None
    while True:
        kwargs = {"Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_aliases(**kwargs)
        assert len(page["Aliases"]) <= 2
        seen.extend(a["AliasName"] for a in page["Aliases"])
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert len(seen) == len(set(seen))
    assert set(names) <= set(seen)
    assert seen == sorted(seen)

    # Filtered by key, also paginated.
    first = kms.list_aliases(KeyId=key_id, Limit=3)
    assert first["Truncated"] is True and len(first["Aliases"]) == 3
    rest = kms.list_aliases(KeyId=key_id, Limit=3, Marker=first["NextMarker"])
    assert rest["Truncated"] is False
    assert [a["AliasName"] for a in first["Aliases"] + rest["Aliases"]] == sorted(names)

    via_paginator = kms.get_paginator("list_aliases").paginate(
        KeyId=key_id, PaginationConfig={"PageSize": 2}
    ).build_full_result()["Aliases"]
    assert [a["AliasName"] for a in via_paginator] == sorted(names)

    with pytest.raises(kms.exceptions.InvalidMarkerException):
        kms.list_aliases(Marker="!!!")
