#!/usr/bin/env python3
"""Writes an OCI image archive (one uncompressed layer) without Docker or a registry.

The archive is what `ctr images import` and `docker load`/`podman load` read: an
`oci-layout`, an `index.json` naming the image (the `io.containerd.image.name` and
`org.opencontainers.image.ref.name` annotations), a manifest, a config and one layer.
Files keep the modes given; every entry is owned by root and dated at the epoch,
so the same inputs give the same image digest.

Usage:
  oci-image.py --name localhost/kubekms:0.1.0 --output image.tar \\
      --entrypoint /usr/local/bin/kubekms-operator --user 65532:65532 \\
      --label org.opencontainers.image.source=... \\
      SRC:DEST[:MODE] ...
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile


def fail(msg: str) -> "None":
    print(f"oci-image: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_file(spec: str):
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        fail(f"file {spec!r}: expected SRC:DEST or SRC:DEST:MODE")
    src, dest = parts[0], parts[1]
    if not dest.startswith("/"):
        fail(f"file {spec!r}: DEST must be absolute")
    if not os.path.isfile(src):
        fail(f"file {spec!r}: {src} is not a file")
    mode = int(parts[2], 8) if len(parts) == 3 else os.stat(src).st_mode & 0o7777
    return src, dest.lstrip("/"), mode


def tar_info(name: str, kind, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def layer_tar(files, dirs) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(tar_info(d, tarfile.DIRTYPE, 0o755 if d != "tmp" else 0o1777))
        for src, dest, mode in sorted(files, key=lambda f: f[1]):
            with open(src, "rb") as f:
                data = f.read()
            tar.addfile(tar_info(dest, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    return out.getvalue()


def parent_dirs(files, extra):
    dirs = set(extra)
    for _, dest, _ in files:
        parts = dest.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    tar.addfile(tar_info(f"blobs/sha256/{digest}", tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return f"sha256:{digest}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="image reference, e.g. localhost/kubekms:0.1.0")
    ap.add_argument("--output", required=True)
    ap.add_argument("--entrypoint", action="append", default=[], help="repeat for each argument")
    ap.add_argument("--cmd", action="append", default=[])
    ap.add_argument("--user", default="")
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--dir", action="append", default=[], help="extra empty directory, e.g. tmp")
    ap.add_argument("files", nargs="+", metavar="SRC:DEST[:MODE]")
    args = ap.parse_args()

    files = [parse_file(s) for s in args.files]
    layer = layer_tar(files, parent_dirs(files, [d.strip("/") for d in args.dir]))
    labels = {}
    for label in args.label:
        k, sep, v = label.partition("=")
        if not sep:
            fail(f"label {label!r}: expected KEY=VALUE")
        labels[k] = v

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": args.user,
            "Env": args.env or ["PATH=/usr/local/bin"],
            "Entrypoint": args.entrypoint or None,
            "Cmd": args.cmd or None,
            "WorkingDir": args.workdir,
            "Labels": labels or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "e2e/scripts/oci-image.py"}],
    }
    config["config"] = {k: v for k, v in config["config"].items() if v is not None}
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()

    tmp = args.output + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        layer_digest = blob(tar, layer)
        config_digest = blob(tar, config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        manifest_digest = blob(tar, manifest_bytes)
        tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest_bytes),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": args.name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
        for name, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index, sort_keys=True).encode()),
        ):
            tar.addfile(tar_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    os.replace(tmp, args.output)
    print(f"{args.name} {manifest_digest} ({len(layer)} byte layer) -> {args.output}")


if __name__ == "__main__":
    main()
