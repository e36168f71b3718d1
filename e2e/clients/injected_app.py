"""An application in a pod the kubekms webhook injected: it sets no AWS identity, endpoint or
region of its own. boto3's default chain finds the web identity (AWS_ROLE_ARN +
AWS_WEB_IDENTITY_TOKEN_FILE), the endpoints (AWS_ENDPOINT_URL_KMS / _STS) and the region the
webhook put in its environment; the data key is the file KUBEKMS_DATA_KEY_DB names.

Prints one JSON line: the STS identity, the result of an Encrypt as that identity, and the data
key's and keyring's SHA-256 digests (never a key: the test looks for key bytes in every log).
With APP_STAY=1 it then sleeps, as a Deployment's app would serve.
"""

import base64
import hashlib
import json
import os
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def code_of(error):
    return error.response.get("Error", {}).get("Code") or "Unknown"


def main():
    out = {"identity": None, "identityError": None, "encrypt": None}
    config = Config(retries={"max_attempts": 3, "mode": "standard"})
    session = boto3.session.Session()
    try:
        out["identity"] = session.client("sts", config=config).get_caller_identity()["Arn"]
    except ClientError as e:
        out["identityError"] = code_of(e)
    except Exception as e:  # noqa: BLE001 - reported, so the test says what went wrong
        out["identityError"] = f"{type(e).__name__}: {e}"
    try:
        session.client("kms", config=config).encrypt(
            KeyId=os.environ["APP_KEY"], Plaintext=b"from an injected pod",
            EncryptionContext={"app": "orders"})
    except ClientError as e:
        out["encrypt"] = code_of(e)
    except Exception as e:  # noqa: BLE001
        out["encrypt"] = f"{type(e).__name__}: {e}"
    path = os.environ.get("KUBEKMS_DATA_KEY_DB")
    if path:
        with open(path, "rb") as f:
            key = f.read()
        out["keySha256"] = hashlib.sha256(key).hexdigest()
        out["keyLength"] = len(key)
        with open(path + ".keyring.json") as f:
            ring = json.load(f)
        out["current"] = ring["current"]
        out["keyring"] = {k["id"]: hashlib.sha256(base64.b64decode(k["key"])).hexdigest()
                          for k in ring["keys"]}
    out["env"] = sorted(k for k in os.environ if k.startswith(("AWS_", "KUBEKMS_")))
    print(json.dumps(out), flush=True)
    if os.environ.get("APP_STAY") == "1":
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
