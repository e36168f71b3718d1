"""Asymmetric keys, cross-checked with an independent implementation (`cryptography`):
signatures made by Sign verify locally, ciphertexts made locally with the public key decrypt in
KMS, and data key pairs are real, matching PKCS#8/SPKI key pairs."""

import hashlib
import os

import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from kubekms_e2e import error_code, key_arn

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
CURVES = {
    "ECC_NIST_P256": (ec.SECP256R1, "ECDSA_SHA_256"),
    "ECC_NIST_P384": (ec.SECP384R1, "ECDSA_SHA_384"),
    "ECC_NIST_P521": (ec.SECP521R1, "ECDSA_SHA_512"),
    "ECC_SECG_P256K1": (ec.SECP256K1, "ECDSA_SHA_256"),
}
RSA_SIGNING = [
    f"RSASSA_{scheme}_SHA_{bits}" for scheme in ("PSS", "PKCS1_V1_5") for bits in ("256", "384", "512")
]


def hash_of(alg: str):
    return HASHES[alg.rsplit("_", 1)[1]]()


def local_verify(public_key, alg: str, message: bytes, signature: bytes, prehashed: bool = False):
    """Verify with `cryptography`; raises InvalidSignature on failure."""
    h = hash_of(alg)
    algorithm = utils.Prehashed(h) if prehashed else h
    if alg.startswith("ECDSA"):
        public_key.verify(signature, message, ec.ECDSA(algorithm))
    elif alg.startswith("RSASSA_PSS"):
        # AWS KMS uses a salt as long as the digest.
        public_key.verify(
            signature, message, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), algorithm
        )
    else:
        public_key.verify(signature, message, padding.PKCS1v15(), algorithm)


def public_key_of(kms, key_id):
    out = kms.get_public_key(KeyId=key_id)
    return out, serialization.load_der_public_key(out["PublicKey"])


@pytest.fixture(scope="module")
def rsa_signing_key(kms):
    return kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]


@pytest.fixture(scope="module")
def rsa_encryption_key(kms):
    return kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]


@pytest.mark.parametrize("alg", RSA_SIGNING)
def test_rsa_signatures_verify_with_cryptography(kms, rsa_signing_key, alg):
    key_id = rsa_signing_key["KeyId"]
    info, public = public_key_of(kms, key_id)
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert info["KeySpec"] == "RSA_2048" and info["KeyUsage"] == "SIGN_VERIFY"
    assert alg in info["SigningAlgorithms"]
    assert info["KeyId"] == key_arn(key_id)

    message = b"kubekms signs this: " + os.urandom(16)
    out = kms.sign(KeyId=key_id, Message=message, MessageType="RAW", SigningAlgorithm=alg)
    assert out["KeyId"] == key_arn(key_id) and out["SigningAlgorithm"] == alg
    local_verify(public, alg, message, out["Signature"])
    with pytest.raises(InvalidSignature):
        local_verify(public, alg, message + b"!", out["Signature"])

    assert kms.verify(KeyId=key_id, Message=message, Signature=out["Signature"], SigningAlgorithm=alg)[
        "SignatureValid"
    ]

    # A digest signed with MessageType=DIGEST is the same signature scheme over the same hash.
    digest = hashlib.new(hash_of(alg).name, message).digest()
    by_digest = kms.sign(KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm=alg)
    local_verify(public, alg, message, by_digest["Signature"])
    local_verify(public, alg, digest, by_digest["Signature"], prehashed=True)
    assert kms.verify(
        KeyId=key_id, Message=digest, MessageType="DIGEST", Signature=out["Signature"], SigningAlgorithm=alg
    )["SignatureValid"]


@pytest.mark.parametrize("spec", list(CURVES))
def test_ecdsa_signatures_verify_with_cryptography(kms, spec):
    curve, alg = CURVES[spec]
    meta = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    key_id = meta["KeyId"]
    info, public = public_key_of(kms, key_id)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, curve)
    assert info["SigningAlgorithms"] == [alg]
    assert "EncryptionAlgorithms" not in info

    for message in (b"m", b"ecdsa over " + os.urandom(32), os.urandom(4096)):
        sig = kms.sign(KeyId=key_id, Message=message, SigningAlgorithm=alg)["Signature"]
        local_verify(public, alg, message, sig)
        assert kms.verify(KeyId=key_id, Message=message, Signature=sig, SigningAlgorithm=alg)["SignatureValid"]
    digest = hashlib.new(hash_of(alg).name, b"prehashed").digest()
    sig = kms.sign(KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm=alg)["Signature"]
    local_verify(public, alg, b"prehashed", sig)


def test_bad_signatures_are_rejected(kms, kms_raw, rsa_signing_key):
    ec_key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    for key_id, alg in ((rsa_signing_key["KeyId"], "RSASSA_PSS_SHA_256"), (ec_key, "ECDSA_SHA_256")):
        sig = kms.sign(KeyId=key_id, Message=b"original", SigningAlgorithm=alg)["Signature"]
        with pytest.raises(kms.exceptions.KMSInvalidSignatureException):
            kms.verify(KeyId=key_id, Message=b"forged", Signature=sig, SigningAlgorithm=alg)
        flipped = bytearray(sig)
        flipped[len(flipped) // 2] ^= 0x40
        with pytest.raises(kms.exceptions.KMSInvalidSignatureException):
            kms.verify(KeyId=key_id, Message=b"original", Signature=bytes(flipped), SigningAlgorithm=alg)
        with pytest.raises(kms.exceptions.KMSInvalidSignatureException):
            kms.verify(KeyId=key_id, Message=b"original", Signature=b"\x30\x00", SigningAlgorithm=alg)

    # Another key's valid signature is not ours.
    other = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sig = kms.sign(KeyId=other, Message=b"original", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    with pytest.raises(kms.exceptions.KMSInvalidSignatureException):
        kms.verify(KeyId=ec_key, Message=b"original", Signature=sig, SigningAlgorithm="ECDSA_SHA_256")

    # Algorithm not offered by the key, and a digest of the wrong length.
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.sign(KeyId=ec_key, Message=b"x", SigningAlgorithm="ECDSA_SHA_384")
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.sign(KeyId=ec_key, Message=b"x", SigningAlgorithm="RSASSA_PSS_SHA_256")
    with pytest.raises(ClientError) as e:
        kms_raw.sign(KeyId=ec_key, Message=b"too short", MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert error_code(e.value) == "ValidationException"
    # Signing keys do not encrypt, and encryption keys do not sign.
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.sign(KeyId=kms.create_key()["KeyMetadata"]["KeyId"], Message=b"x", SigningAlgorithm="ECDSA_SHA_256")


def test_disabled_signing_key(kms):
    key_id = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key_id)
    with pytest.raises(kms.exceptions.DisabledException):
        kms.sign(KeyId=key_id, Message=b"x", SigningAlgorithm="ECDSA_SHA_384")
    with pytest.raises(kms.exceptions.DisabledException):
        kms.get_public_key(KeyId=key_id)


def test_public_key_of_symmetric_key_is_refused(kms, symmetric_key):
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.get_public_key(KeyId=symmetric_key["KeyId"])


@pytest.mark.parametrize(
    "alg,hash_cls", [("RSAES_OAEP_SHA_256", hashes.SHA256), ("RSAES_OAEP_SHA_1", hashes.SHA1)]
)
def test_rsa_encrypt_locally_decrypt_in_kms(kms, rsa_encryption_key, alg, hash_cls):
    key_id = rsa_encryption_key["KeyId"]
    info, public = public_key_of(kms, key_id)
    assert info["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert set(info["EncryptionAlgorithms"]) == {"RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"}
    oaep = padding.OAEP(mgf=padding.MGF1(hash_cls()), algorithm=hash_cls(), label=None)
    message = b"sealed with the public key " + os.urandom(8)
    ciphertext = public.encrypt(message, oaep)
    out = kms.decrypt(CiphertextBlob=ciphertext, KeyId=key_id, EncryptionAlgorithm=alg)
    assert out["Plaintext"] == message
    assert out["KeyId"] == key_arn(key_id)
    assert out["EncryptionAlgorithm"] == alg

    # KMS-side Encrypt with the same algorithm also round-trips.
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"kms side", EncryptionAlgorithm=alg)["CiphertextBlob"]
    assert len(blob) == 256
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm=alg)["Plaintext"] == b"kms side"


def test_rsa_encryption_errors(kms, rsa_encryption_key):
    key_id = rsa_encryption_key["KeyId"]
    _, public = public_key_of(kms, key_id)
    sha256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    ciphertext = public.encrypt(b"hello", sha256)
    # Wrong algorithm, tampered ciphertext, missing KeyId.
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=ciphertext, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    bad = bytearray(ciphertext)
    bad[10] ^= 1
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=bytes(bad), KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=ciphertext, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert error_code(e.value) in ("ValidationException", "InvalidCiphertextException")
    # RSA_2048 with OAEP SHA-256 holds at most 190 bytes.
    kms.encrypt(KeyId=key_id, Plaintext=os.urandom(190), EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=os.urandom(191), EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert error_code(e.value) == "ValidationException"
    # Symmetric algorithm on an RSA key, and encryption context on an asymmetric key.
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256",
                    EncryptionContext={"a": "b"})
    assert error_code(e.value) == "ValidationException"


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1"])
def test_data_key_pairs_are_real_matching_pairs(kms, symmetric_key, spec):
    key_id = symmetric_key["KeyId"]
    ctx = {"pair": spec}
    out = kms.generate_data_key_pair(KeyId=key_id, KeyPairSpec=spec, EncryptionContext=ctx)
    assert out["KeyId"] == key_arn(key_id)
    assert out["KeyPairSpec"] == spec
    private = serialization.load_der_private_key(out["PrivateKeyPlaintext"], password=None)
    public = serialization.load_der_public_key(out["PublicKey"])
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert private.public_key().public_bytes(*spki) == out["PublicKey"]
    assert public.public_bytes(*spki) == out["PublicKey"]
    # The plaintext is PKCS#8: re-serialising as PKCS#8 DER gives the same bytes back.
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert serialization.load_der_private_key(pkcs8, None).public_key().public_bytes(*spki) == out["PublicKey"]
    if spec.startswith("RSA"):
        assert private.key_size == 2048
        sig = private.sign(b"pair", padding.PKCS1v15(), hashes.SHA256())
        public.verify(sig, b"pair", padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(private.curve, CURVES[spec][0])
        sig = private.sign(b"pair", ec.ECDSA(hashes.SHA256()))
        public.verify(sig, b"pair", ec.ECDSA(hashes.SHA256()))

    back = kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext=ctx)
    assert back["Plaintext"] == out["PrivateKeyPlaintext"]
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"])

    without = kms.generate_data_key_pair_without_plaintext(KeyId=key_id, KeyPairSpec=spec)
    assert "PrivateKeyPlaintext" not in without
    recovered = kms.decrypt(CiphertextBlob=without["PrivateKeyCiphertextBlob"])["Plaintext"]
    recovered_key = serialization.load_der_private_key(recovered, password=None)
    assert recovered_key.public_key().public_bytes(*spki) == without["PublicKey"]
    assert without["PublicKey"] != out["PublicKey"]


def test_data_key_pair_errors(kms, kms_raw, symmetric_key):
    with pytest.raises(ClientError) as e:
        kms_raw.generate_data_key_pair(KeyId=symmetric_key["KeyId"], KeyPairSpec="SYMMETRIC_DEFAULT")
    assert error_code(e.value) == "ValidationException"
    asym = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.generate_data_key_pair(KeyId=asym, KeyPairSpec="ECC_NIST_P256")
    kms.disable_key(KeyId=symmetric_key["KeyId"])
    with pytest.raises(kms.exceptions.DisabledException):
        kms.generate_data_key_pair(KeyId=symmetric_key["KeyId"], KeyPairSpec="ECC_NIST_P256")
