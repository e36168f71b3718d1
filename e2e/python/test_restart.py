"""Everything survives a restart of the engine on the same data directory: keys of every kind
with all their versions, states, tags, aliases, rotation settings, imported material, and every
ciphertext, signature and MAC made before."""

import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from kubekms_e2e import key_arn
from test_import import import_material


def test_state_survives_restart(engine, restart_engine, kms, tmp_path, unique):
    made = {}

    # A symmetric key with three versions, a ciphertext from each, rotation on, tags, aliases.
    sym = kms.create_key(Description=f"restart {unique}", Tags=[{"TagKey": "t", "TagValue": unique}])["KeyMetadata"]
    sym_id = sym["KeyId"]
    kms.enable_key_rotation(KeyId=sym_id, RotationPeriodInDays=180)
    blobs = []
    for i in range(3):
        if i:
            kms.rotate_key_on_demand(KeyId=sym_id)
        blobs.append(
            (f"version {i + 1} {unique}".encode(),
             kms.encrypt(KeyId=sym_id, Plaintext=f"version {i + 1} {unique}".encode(),
                         EncryptionContext={"v": str(i)})["CiphertextBlob"])
        )
    alias = f"alias/e2e-restart-{unique}"
    kms.create_alias(AliasName=alias, TargetKeyId=sym_id)
    data_key = kms.generate_data_key(KeyId=alias, KeySpec="AES_256")
    rotations = kms.list_key_rotations(KeyId=sym_id)["Rotations"]
    assert len(rotations) == 2
    made["sym_status"] = kms.get_key_rotation_status(KeyId=sym_id)

    # Asymmetric keys: a signature and a public key to compare.
    rsa_id = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    rsa_pub = kms.get_public_key(KeyId=rsa_id)["PublicKey"]
    rsa_sig = kms.sign(KeyId=rsa_id, Message=b"before restart", SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")[
        "Signature"
    ]
    rsa_enc_id = kms.create_key(KeySpec="RSA_3072", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    rsa_enc_blob = kms.encrypt(KeyId=rsa_enc_id, Plaintext=b"rsa before", EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "CiphertextBlob"
    ]
    ec_id = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    ec_pub = kms.get_public_key(KeyId=ec_id)["PublicKey"]
    ec_sig = kms.sign(KeyId=ec_id, Message=b"before restart", SigningAlgorithm="ECDSA_SHA_384")["Signature"]

    # HMAC.
    mac_id = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    mac = kms.generate_mac(KeyId=mac_id, Message=b"before restart", MacAlgorithm="HMAC_SHA_384")["Mac"]

    # Imported material.
    ext_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    material = os.urandom(32)
    import_material(kms, ext_id, material, "oaep", tmp_path)
    ext_blob = kms.encrypt(KeyId=ext_id, Plaintext=b"imported before")["CiphertextBlob"]

    # States other than Enabled.
    disabled_id = kms.create_key()["KeyMetadata"]["KeyId"]
    disabled_blob = kms.encrypt(KeyId=disabled_id, Plaintext=b"disabled before")["CiphertextBlob"]
    kms.disable_key(KeyId=disabled_id)
    doomed_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=doomed_id, PendingWindowInDays=10)
    doomed_date = kms.describe_key(KeyId=doomed_id)["KeyMetadata"]["DeletionDate"]
    pending_import_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]

    described_before = {
        k: kms.describe_key(KeyId=k)["KeyMetadata"]
        for k in (sym_id, rsa_id, rsa_enc_id, ec_id, mac_id, ext_id, disabled_id, doomed_id, pending_import_id)
    }
    keys_before = sorted(k["KeyId"] for k in kms.get_paginator("list_keys").paginate().build_full_result()["Keys"])
    aliases_before = sorted(
        (a["AliasName"], a.get("TargetKeyId"))
        for a in kms.get_paginator("list_aliases").paginate().build_full_result()["Aliases"]
    )
    old_pid = engine.proc.pid

    restart_engine()
    assert engine.proc.pid != old_pid
    kms = engine.client()

    # The same keys, aliases and metadata.
    keys_after = sorted(k["KeyId"] for k in kms.get_paginator("list_keys").paginate().build_full_result()["Keys"])
    assert keys_after == keys_before
    aliases_after = sorted(
        (a["AliasName"], a.get("TargetKeyId"))
        for a in kms.get_paginator("list_aliases").paginate().build_full_result()["Aliases"]
    )
    assert aliases_after == aliases_before
    for key_id, before in described_before.items():
        after = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        assert after == before, f"metadata of {key_id} changed across the restart"
    assert kms.describe_key(KeyId=doomed_id)["KeyMetadata"]["DeletionDate"] == doomed_date
    assert kms.describe_key(KeyId=disabled_id)["KeyMetadata"]["KeyState"] == "Disabled"
    assert kms.describe_key(KeyId=pending_import_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    tags = kms.list_resource_tags(KeyId=sym_id)["Tags"]
    assert tags == [{"TagKey": "t", "TagValue": unique}]
    assert kms.list_key_rotations(KeyId=sym_id)["Rotations"] == rotations
    assert kms.get_key_rotation_status(KeyId=sym_id)["NextRotationDate"] == made["sym_status"]["NextRotationDate"]

    # Every ciphertext from every version decrypts; new ones use the latest version.
    for i, (plaintext, blob) in enumerate(blobs):
        out = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"v": str(i)})
        assert out["Plaintext"] == plaintext
        assert out["KeyId"] == key_arn(sym_id)
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == sym_id
    fresh = kms.encrypt(KeyId=alias, Plaintext=b"after restart")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=fresh)["Plaintext"] == b"after restart"

    # Asymmetric keys are the same keys.
    assert kms.get_public_key(KeyId=rsa_id)["PublicKey"] == rsa_pub
    assert kms.verify(KeyId=rsa_id, Message=b"before restart", Signature=rsa_sig,
                      SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")["SignatureValid"]
    new_sig = kms.sign(KeyId=rsa_id, Message=b"after", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
    serialization.load_der_public_key(rsa_pub).verify(
        new_sig, b"after", padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
    )
    assert kms.decrypt(CiphertextBlob=rsa_enc_blob, KeyId=rsa_enc_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "Plaintext"
    ] == b"rsa before"
    assert kms.get_public_key(KeyId=ec_id)["PublicKey"] == ec_pub
    assert kms.verify(KeyId=ec_id, Message=b"before restart", Signature=ec_sig,
                      SigningAlgorithm="ECDSA_SHA_384")["SignatureValid"]
    ec_new = kms.sign(KeyId=ec_id, Message=b"after", SigningAlgorithm="ECDSA_SHA_384")["Signature"]
    serialization.load_der_public_key(ec_pub).verify(ec_new, b"after", ec.ECDSA(hashes.SHA384()))

    assert kms.verify_mac(KeyId=mac_id, Message=b"before restart", MacAlgorithm="HMAC_SHA_384", Mac=mac)["MacValid"]
    assert kms.decrypt(CiphertextBlob=ext_blob)["Plaintext"] == b"imported before"
    # The imported key still remembers its material: other material is refused.
    with pytest.raises(kms.exceptions.IncorrectKeyMaterialException):
        import_material(kms, ext_id, os.urandom(32), "oaep", tmp_path)

    with pytest.raises(kms.exceptions.DisabledException):
        kms.decrypt(CiphertextBlob=disabled_blob)
    kms.enable_key(KeyId=disabled_id)
    assert kms.decrypt(CiphertextBlob=disabled_blob)["Plaintext"] == b"disabled before"
    kms.cancel_key_deletion(KeyId=doomed_id)
    assert kms.describe_key(KeyId=doomed_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_import_token_survives_restart(engine, restart_engine, kms, tmp_path):
    """Import tokens are self-contained: one issued before a restart still works after it."""
    from test_import import oaep_sha256_wrap

    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    restart_engine()
    kms = engine.client()
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=oaep_sha256_wrap(params["PublicKey"], os.urandom(32)),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"ok")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"ok"
