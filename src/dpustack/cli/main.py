"""The `dpustack` command: global options, the command groups, and one way of reporting errors."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from dpustack.cli import flavors, images, networks, nodes, operations, ports, projects, servers, volumes
from dpustack.cli import pci, pci_flavors, security_groups
from dpustack.cli import accelerators, keypairs
from dpustack.cli import subnets
from dpustack.cli import context
from dpustack.cli.output import stderr
from dpustack.errors import DpustackError


class ReportingGroup(TyperGroup):
    """Turns dpustack errors into `error: <message>` on stderr and exit 1, never a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DpustackError as exc:
            field = f" (field: {exc.field})" if exc.field else ""
            _fail(f"{exc.message}{field}")
        except TimeoutError as exc:
            _fail(str(exc))


def _fail(message: str) -> None:
    stderr().print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


app = typer.Typer(cls=ReportingGroup, no_args_is_help=True, add_completion=False,
                  help="dpustack: control plane for clouds whose servers have DPUs.")


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(envvar="DPUSTACK_URL", help="Controller URL.",
                                            show_default=False)] = None,
    token: Annotated[str | None, typer.Option(envvar="DPUSTACK_TOKEN", help="API token.",
                                              show_default=False)] = None,
) -> None:
    """dpustack: control plane for clouds whose servers have DPUs."""
    ctx.call_on_close(context.begin(url, token).close)


app.add_typer(servers.app, name="server")
app.add_typer(flavors.app, name="flavor")
app.add_typer(images.app, name="image")
app.add_typer(networks.app, name="network")
app.add_typer(subnets.app, name="subnet")
app.add_typer(ports.app, name="port")
app.add_typer(security_groups.app, name="security-group")
app.add_typer(keypairs.app, name="keypair")
app.add_typer(volumes.app, name="volume")
app.add_typer(operations.app, name="operation")
app.add_typer(nodes.app, name="node")
app.add_typer(pci.app, name="pci")
app.add_typer(pci_flavors.app, name="pci-flavor")
app.add_typer(accelerators.app, name="accelerator")
app.add_typer(projects.projects, name="project")
app.add_typer(projects.tokens, name="token")

# Command groups shipped beside the API client (the lab's `lab` and `demo`) register themselves.
for _plugin in entry_points(group="dpustack.cli"):
    _plugin.load()(app)
