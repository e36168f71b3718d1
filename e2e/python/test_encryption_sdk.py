"""The AWS Encryption SDK for Python, unchanged: its KMS master key provider talks to the engine
through a botocore session whose KMS endpoint comes from AWS_ENDPOINT_URL_KMS."""

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError, DecryptKeyError
from aws_encryption_sdk.identifiers import CommitmentPolicy
from cryptography.exceptions import InvalidSignature

from kubekms_e2e import REGION

CONTEXT = {"purpose": "esdk-e2e", "order": "42"}


@pytest.fixture
def sdk_env(engine, monkeypatch):
    for name, value in engine.aws_env({}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", engine.endpoint)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)


def provider(*key_arns):
    session = botocore.session.Session()
    assert session.get_config_variable("region") == REGION
    return aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=list(key_arns), botocore_session=session)


@pytest.fixture
def sdk():
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )


def test_encrypt_and_decrypt_a_message(sdk_env, sdk, kms):
    arn = kms.create_key(Description="esdk")["KeyMetadata"]["Arn"]
    message = b"a message for the encryption sdk " * 100
    ciphertext, header = sdk.encrypt(source=message, key_provider=provider(arn), encryption_context=CONTEXT)
    assert message not in ciphertext
    assert all(header.encryption_context[k] == v for k, v in CONTEXT.items())
    assert [k.key_provider.key_info.decode() for k in header.encrypted_data_keys] == [arn]

    plaintext, dheader = sdk.decrypt(source=ciphertext, key_provider=provider(arn))
    assert plaintext == message
    assert all(dheader.encryption_context[k] == v for k, v in CONTEXT.items())

    # Streaming in small frames works too.
    with sdk.stream(mode="e", source=message, key_provider=provider(arn), frame_length=256,
                    encryption_context=CONTEXT) as enc:
        streamed = enc.read()
    assert sdk.decrypt(source=streamed, key_provider=provider(arn))[0] == message


def test_message_does_not_decrypt_with_another_key(sdk_env, sdk, kms):
    arn = kms.create_key(Description="esdk owner")["KeyMetadata"]["Arn"]
    other = kms.create_key(Description="esdk stranger")["KeyMetadata"]["Arn"]
    ciphertext, _ = sdk.encrypt(source=b"only for arn", key_provider=provider(arn), encryption_context=CONTEXT)
    with pytest.raises(DecryptKeyError):
        sdk.decrypt(source=ciphertext, key_provider=provider(other))

    # A disabled key cannot decrypt either; enabling it again can.
    kms.disable_key(KeyId=arn)
    with pytest.raises(DecryptKeyError):
        sdk.decrypt(source=ciphertext, key_provider=provider(arn))
    kms.enable_key(KeyId=arn)
    assert sdk.decrypt(source=ciphertext, key_provider=provider(arn))[0] == b"only for arn"

    tampered = bytearray(ciphertext)
    tampered[-40] ^= 1
    # The default suite signs messages: a flipped byte fails the tag or the ECDSA signature.
    with pytest.raises((AWSEncryptionSDKClientError, InvalidSignature)):
        sdk.decrypt(source=bytes(tampered), key_provider=provider(arn))


def test_message_for_two_keys_decrypts_with_either(sdk_env, sdk, kms):
    first = kms.create_key(Description="esdk first")["KeyMetadata"]["Arn"]
    second = kms.create_key(Description="esdk second")["KeyMetadata"]["Arn"]
    ciphertext, header = sdk.encrypt(source=b"shared", key_provider=provider(first, second),
                                     encryption_context=CONTEXT)
    assert len(header.encrypted_data_keys) == 2
    assert sdk.decrypt(source=ciphertext, key_provider=provider(first))[0] == b"shared"
    assert sdk.decrypt(source=ciphertext, key_provider=provider(second))[0] == b"shared"
