"""An application beside a kubekms sidecar agent: it asks the agent on localhost
(KUBEKMS_AGENT_URL, set by the webhook) for its data key's keyring, and has it decrypt a
data-key ciphertext it kept (APP_CIPHERTEXT), every two seconds.

Prints one JSON line per round with SHA-256 digests only (never a key: the test looks for key
bytes in every log): the keyring by id, the current id, and the decrypted key's digest.
"""

import base64
import hashlib
import json
import os
import time
import urllib.error
import urllib.request


def sha(b64):
    return hashlib.sha256(base64.b64decode(b64)).hexdigest()


def ask(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def main():
    agent = os.environ["KUBEKMS_AGENT_URL"]
    while True:
        out = {}
        try:
            status, ring = ask(f"{agent}/v1/data-keys/db")
            out["keyringStatus"] = status
            if status == 200:
                out["current"] = ring["current"]
                out["keyring"] = {k["id"]: sha(k["key"]) for k in ring["keys"]}
            status, answer = ask(f"{agent}/v1/decrypt",
                                 {"dataKey": "db", "ciphertext": os.environ["APP_CIPHERTEXT"]})
            out["decryptStatus"] = status
            out["decryptSha256"] = sha(answer["key"]) if status == 200 else answer.get("__type")
        except Exception as e:  # noqa: BLE001 - reported, so the test says what went wrong
            out["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out), flush=True)
        time.sleep(2)


if __name__ == "__main__":
    main()
