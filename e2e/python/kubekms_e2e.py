"""Run the real `kubekms-engine` binary and talk to it with real AWS clients.

The tests never build anything: `e2e/scripts/python-tests.sh` builds the binary and
exports `KUBEKMS_ENGINE_BIN`. An `Engine` owns one process, its data directory and the
files its stdout, stderr and audit log go to, so tests can search them afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

REGION = "us-east-1"
DEFAULT_ACCOUNT = "111122223333"

LISTENING_RE = re.compile(r"kubekms engine listening on (https?://[0-9A-Za-z.\[\]:-]+)")
ACCESS_KEY_RE = re.compile(r"AWS_ACCESS_KEY_ID=['\"]?([A-Za-z0-9]+)['\"]?")
SECRET_KEY_RE = re.compile(r"AWS_SECRET_ACCESS_KEY=['\"]?([A-Za-z0-9+/=]+)['\"]?")

START_TIMEOUT = float(os.environ.get("KUBEKMS_E2E_START_TIMEOUT", "30"))


def engine_binary() -> Path:
    explicit = os.environ.get("KUBEKMS_ENGINE_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR", "/root/.cache/kubekms-target")
    return Path(target) / "debug" / "kubekms-engine"


class EngineError(RuntimeError):
    pass


class Engine:
    """One `kubekms-engine standalone` process over `data_dir`.

    `restart()` stops the process and starts a new one on the same data directory and the
    same port, so clients made before the restart keep pointing at the right place.
    """

    def __init__(self, workdir: Path, audit_log: bool = True, extra_args=()):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.audit_path = self.workdir / "audit.log" if audit_log else None
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.endpoint: str | None = None
        self.access_key_id: str | None = None
        self.secret_access_key: str | None = None
        # Where the credentials were learnt on the latest start: "stdout" or the file path.
        self.credentials_source: str | None = None
        self.starts = 0
        self._stdout_lines: list[str] = []
        self._reader: threading.Thread | None = None

    # -- process control ------------------------------------------------------------------

    def start(self, listen: str = "127.0.0.1:0") -> "Engine":
        binary = engine_binary()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise EngineError(
                f"engine binary {binary} is missing: run e2e/scripts/python-tests.sh "
                "(it builds it) or set KUBEKMS_ENGINE_BIN"
            )
        self.starts += 1
        args = [str(binary), "standalone", "--data-dir", str(self.data_dir), "--listen", listen]
        if self.audit_path is not None:
            args += ["--audit-log", str(self.audit_path)]
        args += self.extra_args
        env = dict(os.environ)
        env.setdefault("RUST_LOG", os.environ.get("KUBEKMS_E2E_RUST_LOG", "debug"))
        # The engine must generate (first start) or reload (restarts) its own credentials.
        env.pop("KUBEKMS_ACCESS_KEY_ID", None)
        env.pop("KUBEKMS_SECRET_ACCESS_KEY", None)
        stdout_file = self.workdir / f"stdout.{self.starts}.log"
        stderr_file = self.workdir / f"stderr.{self.starts}.log"
        self._stdout_lines = []
        stderr_handle = open(stderr_file, "wb")
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=stderr_handle,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
        )
        stderr_handle.close()
        listening = threading.Event()
        proc = self.proc

        def pump():
            with open(stdout_file, "wb") as out:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    out.write(raw)
                    out.flush()
                    line = raw.decode("utf-8", "replace")
                    self._stdout_lines.append(line)
                    if LISTENING_RE.search(line):
                        listening.set()
            listening.set()

        self._reader = threading.Thread(target=pump, name="engine-stdout", daemon=True)
        self._reader.start()

        listening.wait(START_TIMEOUT)
        if self._find_endpoint() is None:
            self.stop()
            raise EngineError(
                f"engine did not report 'listening on' within {START_TIMEOUT}s "
                f"(exit {proc.returncode}).\nstdout:\n{''.join(self._stdout_lines)}\n"
                f"stderr:\n{stderr_file.read_text(errors='replace')[-4000:]}"
            )
        self.endpoint = self._find_endpoint()
        self._learn_credentials()
        self._wait_until_serving()
        return self

    def _find_endpoint(self) -> str | None:
        for line in self._stdout_lines:
            m = LISTENING_RE.search(line)
            if m:
                return m.group(1).rstrip("/")
        return None

    def _learn_credentials(self):
        # The export lines may follow the banner by a moment.
        deadline = time.monotonic() + 2.0
        while True:
            text = "".join(self._stdout_lines)
            ak, sk = ACCESS_KEY_RE.search(text), SECRET_KEY_RE.search(text)
            if ak and sk:
                self.access_key_id, self.secret_access_key = ak.group(1), sk.group(1)
                self.credentials_source = "stdout"
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # A restart may not print the key again; it is kept in the data directory.
        path = self.data_dir / "credentials.json"
        if path.is_file():
            entry = json.loads(path.read_text())["credentials"][0]
            self.access_key_id = entry["accessKeyId"]
            self.secret_access_key = entry["secretAccessKey"]
            self.credentials_source = str(path)
            return
        raise EngineError(
            "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY on the engine's stdout and no "
            f"{path}:\n{text}"
        )

    def _wait_until_serving(self):
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            try:
                self.client().list_keys(Limit=1)
                return
            except Exception as e:  # noqa: BLE001 - any failure means "not yet"
                last = e
                if self.proc is not None and self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise EngineError(f"engine at {self.endpoint} does not answer ListKeys: {last!r}")

    def stop(self, timeout: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return proc.returncode

    def restart(self) -> "Engine":
        port = self.port
        self.stop()
        return self.start(listen=f"127.0.0.1:{port}")

    @property
    def port(self) -> int:
        assert self.endpoint is not None
        return int(self.endpoint.rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- clients --------------------------------------------------------------------------

    def client(self, region: str = REGION, validate: bool = True, **config):
        """A boto3 KMS client for this engine. `validate=False` turns off botocore's own
        parameter checks so requests botocore would refuse reach the engine."""
        cfg = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            parameter_validation=validate,
            connect_timeout=5,
            read_timeout=60,
            **config,
        )
        return boto3.session.Session().client(
            "kms",
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=cfg,
        )

    def aws_env(self, base: dict | None = None) -> dict:
        """Environment for the AWS CLI and SDKs that read credentials from the environment."""
        env = dict(os.environ if base is None else base)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.pop(name, None)
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key_id or "",
            AWS_SECRET_ACCESS_KEY=self.secret_access_key or "",
            AWS_DEFAULT_REGION=REGION,
            AWS_REGION=REGION,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_PAGER="",
        )
        return env

    # -- what the engine wrote ------------------------------------------------------------

    def stdout_text(self) -> str:
        return "".join(self._stdout_lines)

    def output_files(self) -> list[Path]:
        return sorted(self.workdir.glob("stdout.*.log")) + sorted(self.workdir.glob("stderr.*.log"))

    def audit_lines(self) -> list[dict]:
        if self.audit_path is None or not self.audit_path.exists():
            return []
        out = []
        for raw in self.audit_path.read_text().splitlines():
            if raw.strip():
                out.append(json.loads(raw))
        return out

    def wait_for_audit(self, request_ids, timeout: float = 10.0) -> dict[str, list[dict]]:
        """The audit lines of each request id, once every id has at least one."""
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout
        while True:
            by_id: dict[str, list[dict]] = {}
            for line in self.audit_lines():
                if line.get("requestId") in wanted:
                    by_id.setdefault(line["requestId"], []).append(line)
            if set(by_id) == wanted or time.monotonic() > deadline:
                return by_id
            time.sleep(0.05)


def key_arn(key_id: str, region: str = REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:kms:{region}:{account}:key/{key_id}"


def alias_arn(name: str, region: str = REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:kms:{region}:{account}:{name}"


def error_code(exc) -> str:
    return exc.response["Error"]["Code"]
