"""`dpustack-controller`: assemble the controller from the environment and serve its API."""

from __future__ import annotations

import argparse
import logging

import uvicorn
from pydantic import ValidationError

from dpustack.api.app import create_app
from dpustack.controller.assembly import assemble_controller
from dpustack.controller.settings import Settings
from dpustack.errors import DpustackError
from dpustack.tls import check_pair

log = logging.getLogger("dpustack.controller")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="dpustack-controller",
        description="Serve the dpustack controller API. Configuration comes from the environment: "
                    "DPUSTACK_HOME (data directory, default ~/.local/share/dpustack), DPUSTACK_DATABASE_URL "
                    "(default: SQLite in DPUSTACK_HOME), DPUSTACK_NODE_DOWN_AFTER (seconds, default 30), "
                    "DPUSTACK_WORKERS (operation workers, default 4), DPUSTACK_OVN_NB (OVN northbound "
                    "database, e.g. unix:/run/ovn/ovnnb_db.sock; unset: networks live in the database only), "
                    "DPUSTACK_TLS_CERT and DPUSTACK_TLS_KEY (the certificate and key served), "
                    "DPUSTACK_AGENT_CA (the CA bundle agents' certificates must verify against), "
                    "DPUSTACK_INSECURE=true (serve and call agents over plain HTTP instead; warned).")
    parser.add_argument("--bind", default="127.0.0.1:8700", help="HOST:PORT to listen on (default %(default)s)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--bind must be HOST:PORT, not {args.bind!r}")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ValidationError as exc:
        parser.error(exc.errors()[0]["msg"])
    tls: dict[str, str] = {}
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            check_pair(settings.tls_cert, settings.tls_key, field="DPUSTACK_TLS_CERT")
        except DpustackError as exc:
            parser.error(exc.message)
        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    elif not settings.insecure:
        parser.error("no TLS certificate: set DPUSTACK_TLS_CERT and DPUSTACK_TLS_KEY, or DPUSTACK_INSECURE=true "
                     "to serve plain HTTP")
    if settings.insecure:
        log.warning("DPUSTACK_INSECURE is set: plain HTTP is allowed to the API and to the agents; tokens and "
                    "credentials may cross the network unencrypted")
    app = create_app(assemble_controller(settings))
    uvicorn.run(app, host=host, port=int(port), log_level=args.log_level, **tls)


if __name__ == "__main__":
    main()
