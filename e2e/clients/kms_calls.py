"""KMS calls made the way an application in a pod makes them: boto3's default credential chain
(a web identity from AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, or an access key from the
environment) and the endpoints from AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL_KMS. Nothing here
signs or builds a request by hand.

Reads a JSON list of calls on stdin (or from $KMS_CALLS): {"op": "encrypt", "args": {...}}, where argument values
under "b64:" are base64 for bytes. The op "__credentials__" prints the session's credentials.
A call with "keep": NAME keeps its answer's "field" (default CiphertextBlob, base64) in
"kept". Prints one JSON object: {"identity": ARN or null, "identityError": code or null,
"results": [null for success, or the AWS error code, per call], "credentials": {...}}.
"""

import base64
import json
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def decode(value):
    if isinstance(value, str) and value.startswith("b64:"):
        return base64.b64decode(value[4:])
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    return value


def code_of(error):
    return error.response.get("Error", {}).get("Code") or "Unknown"


def main():
    # A pod has no stdin to read from: it gets its calls in KMS_CALLS.
    calls = json.loads(os.environ["KMS_CALLS"]) if "KMS_CALLS" in os.environ else json.load(sys.stdin)
    config = Config(retries={"max_attempts": 1, "mode": "standard"})
    session = boto3.session.Session()
    out = {"identity": None, "identityError": None, "results": [], "credentials": None, "kept": {}}
    try:
        out["identity"] = session.client("sts", config=config).get_caller_identity()["Arn"]
    except ClientError as e:
        out["identityError"] = code_of(e)
    kms = session.client("kms", config=config)
    for call in calls:
        if call["op"] == "__credentials__":
            creds = session.get_credentials().get_frozen_credentials()
            out["credentials"] = {
                "accessKeyId": creds.access_key,
                "secretAccessKey": creds.secret_key,
                "sessionToken": creds.token,
            }
            out["results"].append(None)
            continue
        try:
            response = getattr(kms, call["op"])(**decode(call.get("args", {})))
            if "keep" in call:
                value = response[call.get("field", "CiphertextBlob")]
                if isinstance(value, bytes):
                    value = base64.b64encode(value).decode()
                out["kept"][call["keep"]] = value
            out["results"].append(None)
        except ClientError as e:
            out["results"].append(code_of(e))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
