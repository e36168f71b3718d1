"""Bring-your-own key material, wrapped the way AWS documents it: RSAES_OAEP_SHA_256 with
`cryptography`, and RSA_AES_KEY_WRAP_SHA_256 with the real `openssl` commands."""

import hashlib
import hmac
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from kubekms_e2e import error_code, key_arn

OPENSSL = shutil.which("openssl")
XXD = shutil.which("xxd")


def oaep_sha256_wrap(public_der: bytes, material: bytes) -> bytes:
    public = serialization.load_der_public_key(public_der)
    return public.encrypt(
        material, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )


def openssl_kwp_wrap(workdir: Path, public_der: bytes, material: bytes) -> bytes:
    """The commands of the AWS guide "Encrypt key material with OpenSSL" for
    RSA_AES_KEY_WRAP_SHA_256, run as written (through a shell, in a scratch directory)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "WrappingPublicKey.der").write_bytes(public_der)
    (workdir / "PlaintextKeyMaterial.bin").write_bytes(material)
    script = r"""
set -euo pipefail
openssl rand -out aes-key.bin 32
openssl pkeyutl -encrypt -in aes-key.bin -out enc-aes-key.bin \
    -inkey WrappingPublicKey.der -keyform DER -pubin \
    -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
openssl enc -id-aes256-wrap-pad -K "$(xxd -p < aes-key.bin | tr -d '\n')" -iv A65959A6 \
    -in PlaintextKeyMaterial.bin -out key-material-wrapped.bin
cat enc-aes-key.bin key-material-wrapped.bin > EncryptedKeyMaterial.bin
"""
    subprocess.run(["bash", "-c", script], cwd=workdir, check=True, capture_output=True)
    return (workdir / "EncryptedKeyMaterial.bin").read_bytes()


def import_material(kms, key_id, material, method, tmp_path, **import_kwargs):
    """GetParametersForImport + wrap + ImportKeyMaterial; returns the ImportKeyMaterial answer."""
    # The openssl path also uses a larger wrapping key, so the engine must split the blob at
    # the modulus length rather than at a fixed 256 bytes.
    alg, spec, bits = {
        "oaep": ("RSAES_OAEP_SHA_256", "RSA_2048", 2048),
        "openssl": ("RSA_AES_KEY_WRAP_SHA_256", "RSA_3072", 3072),
    }[method]
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=alg, WrappingKeySpec=spec)
    assert params["KeyId"] == key_arn(key_id)
    assert params["ParametersValidTo"].timestamp() > time.time()
    public = serialization.load_der_public_key(params["PublicKey"])
    assert public.key_size == bits
    if method == "oaep":
        wrapped = oaep_sha256_wrap(params["PublicKey"], material)
    else:
        wrapped = openssl_kwp_wrap(tmp_path / f"wrap-{os.urandom(4).hex()}", params["PublicKey"], material)
    return kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        **import_kwargs,
    )


needs_openssl = pytest.mark.skipif(not (OPENSSL and XXD), reason="openssl and xxd are needed")


def external_key(kms, **kwargs):
    meta = kms.create_key(Origin="EXTERNAL", **kwargs)["KeyMetadata"]
    assert meta["Origin"] == "EXTERNAL"
    assert meta["KeyState"] == "PendingImport"
    assert meta["Enabled"] is False
    return meta["KeyId"]


@pytest.mark.parametrize("method", ["oaep", pytest.param("openssl", marks=needs_openssl)])
def test_import_symmetric_material(kms, tmp_path, method):
    key_id = external_key(kms, Description=f"imported symmetric ({method})")
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.encrypt(KeyId=key_id, Plaintext=b"not yet")

    material = os.urandom(32)
    out = import_material(kms, key_id, material, method, tmp_path)
    assert out["KeyId"] == key_arn(key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled"
    assert meta["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"

    blob = kms.encrypt(KeyId=key_id, Plaintext=b"under imported material", EncryptionContext={"k": "v"})[
        "CiphertextBlob"
    ]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})["Plaintext"] == b"under imported material"

    # Deleting the material makes the key unusable until the same material comes back.
    kms.delete_imported_key_material(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")

    # Re-import of the same material (with the other wrapping method, for good measure).
    other = "openssl" if method == "oaep" and OPENSSL and XXD else "oaep"
    import_material(kms, key_id, material, other, tmp_path)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})["Plaintext"] == b"under imported material"
    # Importing again while the material is present is allowed too.
    import_material(kms, key_id, material, "oaep", tmp_path)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})["Plaintext"] == b"under imported material"

    # Different material is refused, and the key keeps working with the original.
    with pytest.raises(kms.exceptions.IncorrectKeyMaterialException):
        import_material(kms, key_id, os.urandom(32), method, tmp_path)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})["Plaintext"] == b"under imported material"


@pytest.mark.parametrize("method", ["oaep", pytest.param("openssl", marks=needs_openssl)])
def test_import_hmac_material_matches_local_hmac(kms, tmp_path, method):
    key_id = external_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    material = os.urandom(32)
    import_material(kms, key_id, material, method, tmp_path)
    message = b"the tag must be HMAC-SHA256 under exactly the imported bytes"
    mac = kms.generate_mac(KeyId=key_id, Message=message, MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert mac == hmac.new(material, message, hashlib.sha256).digest()
    local = hmac.new(material, b"computed locally", hashlib.sha256).digest()
    assert kms.verify_mac(KeyId=key_id, Message=b"computed locally", MacAlgorithm="HMAC_SHA_256", Mac=local)[
        "MacValid"
    ]
    with pytest.raises(kms.exceptions.IncorrectKeyMaterialException):
        import_material(kms, key_id, os.urandom(32), "oaep", tmp_path)
    # Too short for HMAC_256.
    short_key = external_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    with pytest.raises(kms.exceptions.IncorrectKeyMaterialException):
        import_material(kms, short_key, os.urandom(16), "oaep", tmp_path)


@pytest.mark.parametrize("method", ["oaep", pytest.param("openssl", marks=needs_openssl)])
def test_import_ecc_p256_private_key(kms, tmp_path, method):
    key_id = external_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    private = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # A P-256 PKCS#8 key (about 138 bytes) still fits RSAES_OAEP_SHA_256 with RSA_2048.
    import_material(kms, key_id, pkcs8, method, tmp_path)

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kms.get_public_key(KeyId=key_id)["PublicKey"] == private.public_key().public_bytes(*spki)
    message = b"signed by a key I brought"
    sig = kms.sign(KeyId=key_id, Message=message, SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    private.public_key().verify(sig, message, ec.ECDSA(hashes.SHA256()))
    local_sig = private.sign(b"signed locally", ec.ECDSA(hashes.SHA256()))
    assert kms.verify(KeyId=key_id, Message=b"signed locally", Signature=local_sig, SigningAlgorithm="ECDSA_SHA_256")[
        "SignatureValid"
    ]

    # The same key again is fine; another private key is not.
    import_material(kms, key_id, pkcs8, "oaep", tmp_path)
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(kms.exceptions.IncorrectKeyMaterialException):
        import_material(kms, key_id, other, "oaep", tmp_path)
    # A P-384 key is not P-256 material.
    fresh = external_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(kms.exceptions.IncorrectKeyMaterialException):
        import_material(kms, fresh, p384, "oaep", tmp_path)


def test_import_errors(kms, kms_raw, tmp_path, symmetric_key):
    key_id = external_key(kms)
    other_key = external_key(kms)
    material = os.urandom(32)

    # Only EXTERNAL keys take material.
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.get_parameters_for_import(
            KeyId=symmetric_key["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )

    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    wrapped = oaep_sha256_wrap(params["PublicKey"], material)
    # A token is bound to its key.
    with pytest.raises(kms.exceptions.InvalidImportTokenException):
        kms.import_key_material(KeyId=other_key, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped,
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    bad_token = bytearray(params["ImportToken"])
    bad_token[-5] ^= 1
    with pytest.raises(kms.exceptions.InvalidImportTokenException):
        kms.import_key_material(KeyId=key_id, ImportToken=bytes(bad_token), EncryptedKeyMaterial=wrapped,
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    # Wrapped with the wrong hash, or damaged.
    sha1 = serialization.load_der_public_key(params["PublicKey"]).encrypt(
        material, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    )
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=sha1,
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    damaged = bytearray(wrapped)
    damaged[7] ^= 1
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=bytes(damaged),
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    # Wrong size for a symmetric key.
    short = oaep_sha256_wrap(params["PublicKey"], os.urandom(16))
    with pytest.raises(kms.exceptions.IncorrectKeyMaterialException):
        kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=short,
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    # ValidTo in the past, or with a model that does not expire.
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped,
                                ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=time.time() - 60)
    assert error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped,
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", ValidTo=time.time() + 3600)
    assert error_code(e.value) == "ValidationException"
    # Nothing above changed the key; the good request still works, with an expiry.
    valid_to = int(time.time()) + 7200
    kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped,
                            ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled"
    assert meta["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(meta["ValidTo"].timestamp() - valid_to) < 2

    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.delete_imported_key_material(KeyId=symmetric_key["KeyId"])


def test_openssl_wrapping_matches_rfc5649(tmp_path):
    """Sanity check of the harness itself: what the openssl commands produce unwraps with an
    independent RFC 5649 implementation, so a failure above is the engine's, not the script's."""
    if not (OPENSSL and XXD):
        pytest.skip("openssl and xxd are needed")
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    material = os.urandom(45)
    blob = openssl_kwp_wrap(tmp_path / "check", spki, material)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    aes_key = private.decrypt(blob[:256], oaep)
    assert len(aes_key) == 32
    assert aes_key_unwrap_with_padding(aes_key, blob[256:]) == material


def test_imported_material_expires_at_valid_to(kms, tmp_path):
    """With KEY_MATERIAL_EXPIRES the running engine drops the material at ValidTo (real clock):
    the key waits for a re-import, and the same material brings every ciphertext back."""
    key_id = external_key(kms)
    material = os.urandom(32)
    valid_to = int(time.time()) + 3
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=oaep_sha256_wrap(params["PublicKey"], material),
                            ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"short-lived")["CiphertextBlob"]
    while time.time() < valid_to + 1.5:
        time.sleep(0.25)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingImport"
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.decrypt(CiphertextBlob=blob)
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    import_material(kms, key_id, material, "oaep", tmp_path)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"short-lived"
