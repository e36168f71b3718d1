#!/usr/bin/env python3
"""A small Helm CLI on the real Helm 4 engine, for machines without a `helm` binary.

It drives Helm's own Go SDK through the PyPI package `helm-python-sdk` (import name
`helm_python`): a ctypes binding to `libhelm_c.so`, a C ABI over helm.sh/helm/v4 that ships
inside the wheel. No `helm` executable is wrapped or needed; linting, rendering, schema
validation, CRD installation, release storage and waiting are Helm's code.

    helm.py lint CHART [--strict] [--kube-version V] [-f FILE] [--set K=V]
    helm.py template RELEASE CHART [-n NS] [-f FILE] [--set K=V] [--kube-version V]
                     [-a API_VERSION] [--include-crds] [-s TEMPLATE]
    helm.py install RELEASE CHART [-n NS] [--create-namespace] [--wait[=MODE]] [--timeout 5m]
    helm.py upgrade RELEASE CHART [--install] [--reset-values|--reuse-values] ...
    helm.py uninstall RELEASE [-n NS] [--wait[=MODE]] [--timeout 5m] [--ignore-not-found]
    helm.py status RELEASE [-n NS] [-o table|json]

Cluster options on every cluster command: --kubeconfig (default $KUBECONFIG, then
~/.kube/config), --kube-context. Run it with the project venv's Python
(e2e/scripts/setup.sh installs helm-python-sdk there). Exit codes: 0 success, 1 a Helm or
input error (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

try:
    import helm_python as helm
    from helm_python import _native
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.stderr.write(
        f"Error: the Python package helm-python-sdk is missing ({exc}).\n"
        "Run e2e/scripts/setup.sh, or: pip install helm-python-sdk, and use that Python.\n"
    )
    sys.exit(1)


class UsageError(Exception):
    """Bad input found after argument parsing (a values file, a duration, ...)."""


# --- values -------------------------------------------------------------------------------


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of -f files and --set: maps merge key by key, anything else replaces.

    A null is kept (not dropped) so that Helm's own coalescing can delete the default, as
    `--set key=null` does with the helm CLI.
    """
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def collect_values(args: argparse.Namespace) -> dict[str, Any]:
    """Values in the helm CLI's order: -f files, then --set-json, --set, --set-string, --set-file."""
    values: dict[str, Any] = {}
    for path in args.values or []:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read values file {path}: {exc.strerror}") from exc
        try:
            parsed = helm.values_from_yaml(text)
        except helm.HelmError as exc:
            raise UsageError(f"values file {path}: {exc.detail}") from exc
        values = merge_values(values, parsed or {})
    parsers = (
        ("set_json", "--set-json", helm.parse_set_json),
        ("set", "--set", helm.parse_set_string),
        ("set_string", "--set-string", helm.parse_set_string_values),
        ("set_file", "--set-file", helm.parse_set_file),
    )
    for attr, flag, parse in parsers:
        for expr in getattr(args, attr, None) or []:
            try:
                values = merge_values(values, parse(expr))
            except helm.HelmError as exc:
                raise UsageError(f"{flag} {expr!r}: {exc.detail}") from exc
    return values


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Seconds from a Go-style duration (5m, 1m30s, 90s) or a plain number of seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if not text or _DURATION_PART.sub("", text):
        raise UsageError(f"invalid duration {text!r}: use e.g. 300, 90s, 5m or 1m30s")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    seconds = sum(float(n) * scale[unit] for n, unit in _DURATION_PART.findall(text))
    return max(1, math.ceil(seconds))


# --- rendering ----------------------------------------------------------------------------

# Helm's install order (pkg/release/util/kind_sorter.go), so `template` prints objects in the
# order an install creates them.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]
_KIND = re.compile(r"^kind:\s*[\"']?([A-Za-z0-9]+)", re.MULTILINE)
_DOC_SPLIT = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)


def split_documents(source: str, text: str) -> list[tuple[str, str, str]]:
    """(kind, source, document) for each non-empty YAML document of a rendered file."""
    docs = []
    for doc in _DOC_SPLIT.split(text):
        body = doc.strip("\n")
        # A document of only comments and blank lines renders nothing.
        if not any(line.strip() and not line.lstrip().startswith("#") for line in body.splitlines()):
            continue
        match = _KIND.search(body)
        docs.append((match.group(1) if match else "", source, body))
    return docs


def render(args: argparse.Namespace) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Render offline like `helm template`: (manifests by template path, CRDs of crds/)."""
    values = collect_values(args)
    with helm.Chart.load(args.chart) as chart:
        opts: dict[str, Any] = {"name": args.release, "namespace": args.namespace,
                                "is_install": True}
        if args.kube_version or args.api_versions:
            # Chart.render() does not expose these, but the C ABI's helm_render takes them (it
            # refuses unknown option keys, so a renamed key fails loudly rather than being
            # ignored): the Kubernetes version and extra API versions the render assumes, as
            # `helm template --kube-version/--api-versions` do.
            if args.kube_version:
                opts["kube_version"] = args.kube_version
            if args.api_versions:
                opts["api_versions"] = args.api_versions
            manifests: dict[str, str] = json.loads(
                _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
            )
        else:
            manifests = chart.render(values, **opts)
        crds = chart.crds if args.include_crds else []
    return manifests, crds


# --- commands -----------------------------------------------------------------------------

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def cmd_lint(args: argparse.Namespace) -> int:
    values = collect_values(args)
    report = helm.lint(
        args.chart,
        values or None,
        strict=args.strict or None,
        namespace=args.namespace,
        kube_version=args.kube_version,
        skip_schema_validation=args.skip_schema_validation or None,
    )
    print(f"==> Linting {args.chart}")
    errors = warnings = 0
    for msg in report.get("messages", []):
        severity = msg.get("severity", 0)
        errors += severity >= 3
        warnings += severity == 2
        text = str(msg.get("error", "")).rstrip("\n").replace("\n", "\n    ")
        print(f"[{SEVERITY.get(severity, severity)}] {msg.get('path', '')}: {text}")
    failed = errors > 0 or bool(report.get("errors")) or (args.strict and warnings > 0)
    linted = report.get("total_charts_linted", 1)
    print(f"\n{linted} chart(s) linted, {1 if failed else 0} chart(s) failed")
    return 1 if failed else 0


def cmd_template(args: argparse.Namespace) -> int:
    manifests, crds = render(args)
    docs: list[tuple[str, str, str]] = []
    for crd in crds:
        # filename is the chart-relative source, e.g. kubekms/crds/kubekms.io.yaml.
        docs.extend(split_documents(crd["filename"], crd["data"]))
    rendered: list[tuple[str, str, str]] = []
    for path in sorted(manifests):
        name = os.path.basename(path)
        if name.startswith("_") or name == "NOTES.txt":
            continue
        if args.show_only and not any(path.endswith("/" + s) or path == s for s in args.show_only):
            continue
        rendered.extend(split_documents(path, manifests[path]))
    if args.show_only and not rendered:
        raise UsageError(f"could not find template(s) {', '.join(args.show_only)} in chart")
    order = {kind: i for i, kind in enumerate(INSTALL_ORDER)}
    # Stable: by install order of the kind, then as the files came (sorted by path).
    rendered.sort(key=lambda d: order.get(d[0], len(INSTALL_ORDER)))
    for _, source, body in docs + rendered:
        print(f"---\n# Source: {source}\n{body}")
    return 0


def config_for(args: argparse.Namespace) -> helm.Config:
    return helm.Config(
        kubeconfig_path=args.kubeconfig,
        kube_context=args.kube_context,
        namespace=args.namespace,
    )


def print_release(rel: dict[str, Any], output: str = "table", notes: bool = True) -> None:
    if output == "json":
        print(json.dumps({k: v for k, v in rel.items() if k != "manifest"}, indent=2))
        return
    print(f"NAME: {rel.get('name', '')}")
    print(f"LAST DEPLOYED: {rel.get('deployed_at', '')}")
    print(f"NAMESPACE: {rel.get('namespace', '')}")
    print(f"STATUS: {rel.get('status', '')}")
    print(f"REVISION: {rel.get('revision', '')}")
    chart = rel.get("chart_name")
    if chart:
        print(f"CHART: {chart}-{rel.get('chart_version', '')} (app {rel.get('app_version', '')})")
    if notes and rel.get("notes"):
        print("NOTES:")
        print(str(rel["notes"]).strip("\n"))


def install_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "namespace": args.namespace,
        "timeout": parse_duration(args.timeout) if args.timeout else None,
        "wait": args.wait,
        "dry_run": args.dry_run,
        "rollback_on_failure": args.rollback_on_failure,
        "description": args.description,
    }


def cmd_install(args: argparse.Namespace) -> int:
    helm.validate_release_name(args.release)
    values = collect_values(args)
    with config_for(args) as cfg:
        rel = cfg.install(args.chart, args.release, values, create_namespace=args.create_namespace,
                          **install_opts(args))
    print_release(rel, args.output)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    helm.validate_release_name(args.release)
    values = collect_values(args)
    with config_for(args) as cfg:
        if args.install:
            # As `helm upgrade --install`: install when the release has no history at all.
            try:
                cfg.history(args.release, max_revisions=1)
            except helm.HelmNotFoundError:
                rel = cfg.install(args.chart, args.release, values,
                                  create_namespace=args.create_namespace, **install_opts(args))
                print_release(rel, args.output)
                return 0
        rel = cfg.upgrade(
            args.chart, args.release, values,
            reset_values=args.reset_values, reuse_values=args.reuse_values,
            cleanup_on_fail=args.cleanup_on_fail, max_history=args.history_max,
            **install_opts(args),
        )
    print_release(rel, args.output)
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    with config_for(args) as cfg:
        result = cfg.uninstall(
            args.release,
            keep_history=args.keep_history,
            timeout=parse_duration(args.timeout) if args.timeout else None,
            dry_run=args.dry_run,
            ignore_not_found=args.ignore_not_found,
            wait=args.wait,
        )
    info = result.get("info") if isinstance(result, dict) else None
    if info:
        print(str(info).strip())
    if isinstance(result, dict) and not result.get("release"):
        # --ignore-not-found: the SDK answers an empty result when there was nothing to remove.
        print(f'release "{args.release}" not found (ignored)')
    else:
        print(f'release "{args.release}" uninstalled')
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with config_for(args) as cfg:
        rel = cfg.status(args.release, revision=args.revision)
    print_release(rel, args.output, notes=args.show_notes)
    return 0


# --- argument parsing ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helm.py",
        description="Helm 4 (helm-python-sdk, no helm binary): lint, template, install, "
        "upgrade, uninstall, status.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    values = argparse.ArgumentParser(add_help=False)
    values.add_argument("-f", "--values", action="append", metavar="FILE",
                        help="values YAML file ('-' for stdin); repeatable, later wins")
    values.add_argument("--set", action="append", metavar="K=V", help="set values (a.b=1,c=x)")
    values.add_argument("--set-string", action="append", metavar="K=V",
                        help="set values, always as strings")
    values.add_argument("--set-json", action="append", metavar="K=JSON",
                        help="set values from JSON documents")
    values.add_argument("--set-file", action="append", metavar="K=PATH",
                        help="set values from the contents of files")

    ns = argparse.ArgumentParser(add_help=False)
    ns.add_argument("-n", "--namespace", default=None,
                    help="namespace of the release (default: 'default')")

    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None,
                         help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    cluster.add_argument("--kube-context", default=None, help="kubeconfig context to use")

    def wait_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", nargs="?", const="watcher", default=None,
                       choices=["watcher", "legacy", "hookOnly"],
                       help="wait until the resources are ready (default strategy: watcher)")
        p.add_argument("--timeout", default=None, metavar="DURATION",
                       help="time to wait for the operation, e.g. 5m or 300s (Helm default 5m)")

    lint = sub.add_parser("lint", parents=[values, ns], help="examine a chart for issues")
    lint.add_argument("chart", metavar="CHART")
    lint.add_argument("--strict", action="store_true", help="fail on warnings too")
    lint.add_argument("--kube-version", default=None, help="Kubernetes version to lint for, e.g. 1.20.2")
    lint.add_argument("--skip-schema-validation", action="store_true")
    lint.set_defaults(func=cmd_lint)

    tpl = sub.add_parser("template", parents=[values, ns], help="render a chart locally")
    tpl.add_argument("release", metavar="RELEASE")
    tpl.add_argument("chart", metavar="CHART")
    tpl.add_argument("--kube-version", default=None, help="Kubernetes version to render for")
    tpl.add_argument("-a", "--api-versions", action="append", metavar="API_VERSION",
                     help="extra API version (group/version or group/version/Kind) the "
                     "render assumes; repeatable")
    tpl.add_argument("--include-crds", action="store_true", help="also print the chart's crds/")
    tpl.add_argument("-s", "--show-only", action="append", metavar="TEMPLATE",
                     help="only this template, e.g. templates/rbac.yaml; repeatable")
    tpl.set_defaults(func=cmd_template, namespace="default")

    def release_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("release", metavar="RELEASE")
        p.add_argument("chart", metavar="CHART")
        p.add_argument("--create-namespace", action="store_true",
                       help="create the release namespace if absent")
        wait_flags(p)
        p.add_argument("--dry-run", nargs="?", const="client", default=None,
                       choices=["client", "server"], help="simulate (client or server)")
        p.add_argument("--rollback-on-failure", "--atomic", action="store_true",
                       dest="rollback_on_failure", help="undo the change if it fails")
        p.add_argument("--description", default=None)
        p.add_argument("-o", "--output", choices=["table", "json"], default="table")

    inst = sub.add_parser("install", parents=[values, ns, cluster], help="install a chart")
    release_flags(inst)
    inst.set_defaults(func=cmd_install)

    upg = sub.add_parser("upgrade", parents=[values, ns, cluster], help="upgrade a release")
    release_flags(upg)
    upg.add_argument("-i", "--install", action="store_true",
                     help="install if the release does not exist")
    upg.add_argument("--reset-values", action="store_true")
    upg.add_argument("--reuse-values", action="store_true")
    upg.add_argument("--cleanup-on-fail", action="store_true")
    upg.add_argument("--history-max", type=int, default=None)
    upg.set_defaults(func=cmd_upgrade)

    uni = sub.add_parser("uninstall", parents=[ns, cluster], help="uninstall a release")
    uni.add_argument("release", metavar="RELEASE")
    wait_flags(uni)
    uni.add_argument("--keep-history", action="store_true")
    uni.add_argument("--ignore-not-found", action="store_true")
    uni.add_argument("--dry-run", action="store_true")
    uni.set_defaults(func=cmd_uninstall)

    st = sub.add_parser("status", parents=[ns, cluster], help="show a release's status")
    st.add_argument("release", metavar="RELEASE")
    st.add_argument("--revision", type=int, default=None)
    st.add_argument("--show-notes", action="store_true")
    st.add_argument("-o", "--output", choices=["table", "json"], default="table")
    st.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "reset_values", False) and getattr(args, "reuse_values", False):
        sys.stderr.write("Error: --reset-values and --reuse-values exclude each other\n")
        return 2
    try:
        return int(args.func(args))
    except UsageError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    except helm.HelmNotFoundError as exc:
        if hasattr(args, "kubeconfig"):  # a release command: say which release was missing
            ns = args.namespace or "default"
            sys.stderr.write(f'Error: release "{args.release}" not found in namespace "{ns}" ({exc.detail})\n')
        else:
            sys.stderr.write(f"Error: {str(exc.detail or exc).strip()}\n")
        return 1
    except helm.HelmError as exc:
        detail = str(exc.detail or exc).strip()
        sys.stderr.write(f"Error: {detail}\n")
        return 1
    except BrokenPipeError:
        # `helm.py template ... | head`: the reader went away; not an error of ours.
        return 0


if __name__ == "__main__":
    sys.exit(main())
