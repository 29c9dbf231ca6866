"""`gpushift-certs`: issue a CA and a serving certificate into a directory."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from gpushift_certs.issue import (
    KeyPair,
    atomic_write,
    new_ca,
    new_serving_cert,
    service_dns_names,
    write_cert_dir,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpushift-certs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    issue = sub.add_parser("issue", help="write ca.crt, tls.crt and tls.key")
    issue.add_argument("--out-dir", required=True, help="directory to write into")
    issue.add_argument("--service", help="Service name: adds its cluster DNS names")
    issue.add_argument("--namespace", default="gpushift", help="namespace of --service")
    issue.add_argument("--dns", action="append", default=[], help="extra DNS name (repeat)")
    issue.add_argument("--ip", action="append", default=[], help="IP SAN (repeat)")
    issue.add_argument("--days", type=int, default=365, help="validity of the serving cert")
    issue.add_argument("--ca-days", type=int, default=3650, help="validity of a new CA")
    issue.add_argument("--reuse-ca", action="store_true",
                       help="sign with ca.crt/ca.key already in --out-dir instead of a new CA")
    args = parser.parse_args(argv)

    dns = ([*service_dns_names(args.service, args.namespace)] if args.service else []) + args.dns
    if not dns and not args.ip:
        parser.error("give --service, --dns or --ip: the certificate needs a name")
    out = Path(args.out_dir)
    try:
        ca = _load_ca(out) if args.reuse_ca else new_ca("gpushift-ca",
                                                          dt.timedelta(days=args.ca_days))
        serving = new_serving_cert(ca, dns, args.ip, dt.timedelta(days=args.days))
    except (OSError, ValueError) as exc:
        print(f"gpushift-certs: {exc}", file=sys.stderr)
        return 2
    write_cert_dir(out, ca.cert_pem, serving)
    if not args.reuse_ca:
        atomic_write(out / "ca.key", ca.key_pem, mode=0o600)
    print(f"wrote {out}/ca.crt, tls.crt, tls.key for {', '.join(dns + args.ip)}; "
          f"valid until {serving.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return 0


def _load_ca(out: Path) -> KeyPair:
    return KeyPair((out / "ca.crt").read_bytes(), (out / "ca.key").read_bytes())


if __name__ == "__main__":
    sys.exit(main())
