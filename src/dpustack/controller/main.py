"""`dpustack-controller`: serve the controller API."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from dpustack.api.app import create_app
from dpustack.controller.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="dpustack-controller",
        description="Serve the dpustack controller API. Configuration comes from the environment: "
                    "DPUSTACK_HOME (data directory, default ~/.local/share/dpustack), DPUSTACK_DATABASE_URL "
                    "(default: SQLite in DPUSTACK_HOME), DPUSTACK_NODE_DOWN_AFTER (seconds, default 30), "
                    "DPUSTACK_WORKERS (operation workers, default 4), DPUSTACK_OVN_NB (OVN northbound "
                    "database, e.g. unix:/run/ovn/ovnnb_db.sock; unset: networks live in the database only).")
    parser.add_argument("--bind", default="127.0.0.1:8700", help="HOST:PORT to listen on (default %(default)s)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--bind must be HOST:PORT, not {args.bind!r}")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(Settings.from_env())
    uvicorn.run(app, host=host, port=int(port), log_level=args.log_level)


if __name__ == "__main__":
    main()
