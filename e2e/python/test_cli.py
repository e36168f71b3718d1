"""The AWS CLI, unchanged, pointed at the engine with --endpoint-url."""

import base64
import json
import subprocess
import sys

import pytest


@pytest.fixture
def aws(engine, tmp_path):
    env = engine.aws_env()

    def run(*args, check=True):
        cmd = [sys.executable, "-m", "awscli", "kms", *args, "--endpoint-url", engine.endpoint, "--output", "json"]
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        if proc.returncode == 0 and proc.stdout.strip():
            return json.loads(proc.stdout)
        return proc

    return run


def test_cli_create_encrypt_decrypt_alias_list(aws, kms, tmp_path, unique):
    meta = aws("create-key", "--description", f"cli {unique}")["KeyMetadata"]
    key_id = meta["KeyId"]
    assert meta["KeyState"] == "Enabled"
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == f"cli {unique}"

    alias = f"alias/e2e-cli-{unique}"
    aws("create-alias", "--alias-name", alias, "--target-key-id", key_id)

    plaintext = b"\x00binary\xffplaintext from a file\n"
    (tmp_path / "plain.bin").write_bytes(plaintext)
    enc = aws(
        "encrypt", "--key-id", alias, "--plaintext", "fileb://plain.bin",
        "--encryption-context", "app=cli,stage=e2e",
    )
    assert enc["KeyId"] == meta["Arn"]
    (tmp_path / "cipher.bin").write_bytes(base64.b64decode(enc["CiphertextBlob"]))

    dec = aws("decrypt", "--ciphertext-blob", "fileb://cipher.bin", "--encryption-context", "app=cli,stage=e2e")
    assert base64.b64decode(dec["Plaintext"]) == plaintext
    assert dec["KeyId"] == meta["Arn"]

    # The same ciphertext through boto3, and a wrong context through the CLI.
    assert kms.decrypt(CiphertextBlob=(tmp_path / "cipher.bin").read_bytes(),
                       EncryptionContext={"app": "cli", "stage": "e2e"})["Plaintext"] == plaintext
    failed = aws("decrypt", "--ciphertext-blob", "fileb://cipher.bin", check=False)
    assert failed.returncode != 0
    assert "InvalidCiphertextException" in failed.stderr

    keys = aws("list-keys")["Keys"]  # the CLI follows NextMarker itself
    assert key_id in {k["KeyId"] for k in keys}
    aliases = aws("list-aliases", "--key-id", key_id)["Aliases"]
    assert [a["AliasName"] for a in aliases] == [alias]

    described = aws("describe-key", "--key-id", alias)["KeyMetadata"]
    assert described["KeyId"] == key_id


def test_cli_page_size_walks_every_key(aws, kms):
    for _ in range(3):
        kms.create_key(Description="cli paging")
    all_keys = {k["KeyId"] for k in kms.get_paginator("list_keys").paginate().build_full_result()["Keys"]}
    via_cli = [k["KeyId"] for k in aws("list-keys", "--page-size", "2")["Keys"]]
    assert len(via_cli) == len(set(via_cli))
    assert set(via_cli) == all_keys


def test_cli_sign_verify_and_errors(aws, tmp_path):
    key_id = aws("create-key", "--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    (tmp_path / "msg.txt").write_bytes(b"signed through the cli")
    sig = aws("sign", "--key-id", key_id, "--message", "fileb://msg.txt", "--signing-algorithm", "ECDSA_SHA_256")
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(sig["Signature"]))
    ok = aws("verify", "--key-id", key_id, "--message", "fileb://msg.txt", "--signature", "fileb://sig.bin",
             "--signing-algorithm", "ECDSA_SHA_256")
    assert ok["SignatureValid"] is True
    missing = aws("describe-key", "--key-id", "alias/e2e-cli-missing", check=False)
    assert missing.returncode != 0 and "NotFoundException" in missing.stderr
