"""``dpustack-agent --config agent.toml``: serve the agent API with uvicorn, logging to stderr."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from dpustack.agent.app import create_app
from dpustack.agent.config import load_config
from dpustack.errors import DpustackError
from dpustack.tls import check_pair

log = logging.getLogger("dpustack.agent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dpustack-agent", description="dpustack DPU agent")
    parser.add_argument("--config", type=Path, default=Path("/etc/dpustack/agent.toml"),
                        help="agent.toml (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if config.tls is not None:
            check_pair(config.tls.cert_file, config.tls.key_file, field="tls.cert_file")
        app = create_app(config)
    except DpustackError as exc:
        print(f"dpustack-agent: {exc.message}", file=sys.stderr)
        return 2
    log.info("agent %s (%s node, %s) on %s, advertised as %s, state in %s", config.hostname, config.node_type,
             config.dpu_model, config.bind, config.advertise_url, config.state_dir)
    tls: dict[str, str] = {}
    if config.tls is not None:
        tls = {"ssl_certfile": str(config.tls.cert_file), "ssl_keyfile": str(config.tls.key_file)}
    if config.insecure:
        log.warning("insecure = true: plain HTTP is allowed to and from the controller; credentials cross the "
                    "network unencrypted")
    uvicorn.run(app, host=config.bind_host.strip("[]"), port=config.bind_port, log_config=None,
                log_level=args.log_level, **tls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
