"""Symmetric encryption through boto3: Encrypt/Decrypt/ReEncrypt, data keys, GenerateRandom, and
every way a request can be wrong."""

import os

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kubekms_e2e import alias_arn, error_code, key_arn

CONTEXT = {"purpose": "e2e", "tenant": "acme"}


def test_encrypt_decrypt_with_every_key_id_form(kms, symmetric_key, unique):
    key_id = symmetric_key["KeyId"]
    alias = f"alias/e2e-forms-{unique}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    forms = [key_id, key_arn(key_id), alias, alias_arn(alias)]
    for form in forms:
        plaintext = f"secret via {form}".encode()
        out = kms.encrypt(KeyId=form, Plaintext=plaintext, EncryptionContext=CONTEXT)
        assert out["KeyId"] == key_arn(key_id), "Encrypt must answer with the key ARN"
        assert out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        assert plaintext not in out["CiphertextBlob"]
        # Decrypt finds the key in the blob, and names it by its full ARN.
        back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=CONTEXT)
        assert back["Plaintext"] == plaintext
        assert back["KeyId"] == key_arn(key_id)
        assert back["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        # Naming the key on Decrypt works with any form too.
        for named in forms:
            again = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=CONTEXT, KeyId=named)
            assert again["Plaintext"] == plaintext


def test_ciphertexts_are_randomised(kms, symmetric_key):
    a = kms.encrypt(KeyId=symmetric_key["KeyId"], Plaintext=b"same")["CiphertextBlob"]
    b = kms.encrypt(KeyId=symmetric_key["KeyId"], Plaintext=b"same")["CiphertextBlob"]
    assert a != b


def test_plaintext_size_limits(kms, kms_raw, symmetric_key):
    key_id = symmetric_key["KeyId"]
    largest = os.urandom(4096)
    blob = kms.encrypt(KeyId=key_id, Plaintext=largest)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == largest
    with pytest.raises(ClientError) as e:
        kms_raw.encrypt(KeyId=key_id, Plaintext=os.urandom(4097))
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms_raw.encrypt(KeyId=key_id, Plaintext=b"")
    assert error_code(e.value) == "ValidationException"


def test_wrong_encryption_context(kms, symmetric_key):
    blob = kms.encrypt(KeyId=symmetric_key["KeyId"], Plaintext=b"bound", EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    wrong = [
        None,
        {},
        {"purpose": "e2e"},
        {"purpose": "e2e", "tenant": "ACME"},
        {**CONTEXT, "extra": "x"},
        {"purpose": "tenant", "e2e": "acme"},
    ]
    for ctx in wrong:
        kwargs = {} if ctx is None else {"EncryptionContext": ctx}
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=blob, **kwargs)
    # Order does not matter.
    reordered = {"tenant": "acme", "purpose": "e2e"}
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=reordered)["Plaintext"] == b"bound"

    # And a blob made without context does not decrypt with one.
    plain = kms.encrypt(KeyId=symmetric_key["KeyId"], Plaintext=b"free")["CiphertextBlob"]
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=plain, EncryptionContext=CONTEXT)


def test_tampered_blobs_are_rejected(kms, symmetric_key):
    blob = kms.encrypt(KeyId=symmetric_key["KeyId"], Plaintext=b"tamper me please")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"tamper me please"
    # Every region of the blob: header, key id, version, nonce, body and tag.
    positions = sorted({0, 2, 3, 10, 18, 19, 22, 23, 30, 40, len(blob) // 2, len(blob) - 17, len(blob) - 1})
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=bytes(bad))
    for cut in (1, 16, len(blob) - 1):
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=blob[:cut])
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob + b"\x00")
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=os.urandom(len(blob)))


def test_decrypt_with_the_wrong_key_id(kms, symmetric_key):
    other = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=symmetric_key["KeyId"], Plaintext=b"mine")["CiphertextBlob"]
    with pytest.raises(kms.exceptions.IncorrectKeyException):
        kms.decrypt(CiphertextBlob=blob, KeyId=other["KeyId"])


def test_unknown_key_and_bad_alias(kms):
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.encrypt(KeyId="alias/e2e-never-created", Plaintext=b"x")
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.generate_data_key(KeyId="11111111-2222-3333-4444-555555555555", KeySpec="AES_256")


def test_wrong_key_usage(kms):
    signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.encrypt(KeyId=signing["KeyId"], Plaintext=b"x")
    hmac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.encrypt(KeyId=hmac_key["KeyId"], Plaintext=b"x")
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.generate_data_key(KeyId=signing["KeyId"], KeySpec="AES_256")


def test_re_encrypt(kms, symmetric_key, unique):
    source = symmetric_key["KeyId"]
    dest = kms.create_key(Description=f"re-encrypt dest {unique}")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=source, Plaintext=b"moving house", EncryptionContext={"a": "1"})["CiphertextBlob"]
    out = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"a": "1"},
        DestinationKeyId=dest,
        DestinationEncryptionContext={"b": "2"},
    )
    assert out["SourceKeyId"] == key_arn(source)
    assert out["KeyId"] == key_arn(dest)
    assert out["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert out["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"b": "2"})
    assert back["Plaintext"] == b"moving house"
    assert back["KeyId"] == key_arn(dest)
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"a": "1"})
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"a": "2"}, DestinationKeyId=dest)
    with pytest.raises(kms.exceptions.IncorrectKeyException):
        kms.re_encrypt(CiphertextBlob=blob, SourceKeyId=dest, SourceEncryptionContext={"a": "1"},
                       DestinationKeyId=dest)
    kms.disable_key(KeyId=dest)
    with pytest.raises(kms.exceptions.DisabledException):
        kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"a": "1"}, DestinationKeyId=dest)


def test_generate_data_key(kms, kms_raw, symmetric_key):
    key_id = symmetric_key["KeyId"]
    for kwargs, size in (({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 64}, 64)):
        out = kms.generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, **kwargs)
        assert out["KeyId"] == key_arn(key_id)
        assert len(out["Plaintext"]) == size
        back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=CONTEXT)
        assert back["Plaintext"] == out["Plaintext"]
    # The data key is a usable AES key for envelope encryption.
    out = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    nonce = os.urandom(12)
    sealed = AESGCM(out["Plaintext"]).encrypt(nonce, b"bulk data", None)
    recovered = kms.decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"]
    assert AESGCM(recovered).decrypt(nonce, sealed, None) == b"bulk data"

    keys = {kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")["Plaintext"] for _ in range(5)}
    assert len(keys) == 5

    without = kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_256", EncryptionContext=CONTEXT)
    assert "Plaintext" not in without
    assert without["KeyId"] == key_arn(key_id)
    assert len(kms.decrypt(CiphertextBlob=without["CiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"]) == 32

    with pytest.raises(ClientError) as e:
        kms_raw.generate_data_key(KeyId=key_id, KeySpec="AES_256", NumberOfBytes=32)
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms_raw.generate_data_key(KeyId=key_id)
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms_raw.generate_data_key(KeyId=key_id, NumberOfBytes=1025)
    assert error_code(e.value) == "ValidationException"


def test_generate_random(kms, kms_raw):
    for n in (1, 32, 1024):
        assert len(kms.generate_random(NumberOfBytes=n)["Plaintext"]) == n
    samples = {kms.generate_random(NumberOfBytes=32)["Plaintext"] for _ in range(4)}
    assert len(samples) == 4
    for n in (0, 1025):
        with pytest.raises(ClientError) as e:
            kms_raw.generate_random(NumberOfBytes=n)
        assert error_code(e.value) == "ValidationException"


def test_malformed_requests(kms_raw, symmetric_key):
    with pytest.raises(ClientError) as e:
        kms_raw.encrypt(KeyId=symmetric_key["KeyId"])
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms_raw.encrypt(KeyId=symmetric_key["KeyId"], Plaintext=b"x", EncryptionAlgorithm="ROT13")
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms_raw.encrypt(
            KeyId=symmetric_key["KeyId"], Plaintext=b"x", EncryptionContext={"k": "v" * 9000}
        )
    assert error_code(e.value) == "ValidationException"
