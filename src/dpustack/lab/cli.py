"""`dpustack lab …` and `dpustack demo`: the emulated data centre on this machine."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dpustack.cli.output import Format, FormatOption, print_json, stderr, stdout
from dpustack import metadata_port
from dpustack.drivers.hypervisor.libvirt_lab import command_socket
from dpustack.lab import guest_agent, lifecycle, processes, restart as lab_restart
from dpustack.lab.demo import run_demo
from dpustack.lab.state import LabError, default_dir
from dpustack.lab.tour import FlowResult

app = typer.Typer(help="Run a local lab: a controller and emulated DPU nodes as processes.",
                  no_args_is_help=True)

DirOption = Annotated[Path | None, typer.Option(
    "--dir", help="Lab directory (state, configs, logs). Default: $DPUSTACK_HOME/lab.", show_default=False)]


def _dir(lab_dir: Path | None) -> Path:
    return lab_dir if lab_dir is not None else default_dir()


def _dir_flag(lab_dir: Path | None) -> str:
    """The `--dir …` to repeat in follow-up commands, or nothing for the default directory."""
    return f" --dir {shlex.quote(str(lab_dir.expanduser().resolve()))}" if lab_dir is not None else ""


def _say(message: str) -> None:
    stderr().print(f"[dim]•[/] {escape(message)}")


@app.command("up")
def up(
    bm: Annotated[int, typer.Option("--bm", help="Number of bare-metal nodes (one DPU agent each).", min=0)] = 2,
    vm: Annotated[int, typer.Option(
        "--vm", help="Number of VM nodes (one DPU agent each, its VMs under the host namespace's libvirtd); "
        "needs --dataplane ovn.", min=0)] = 0,
    dataplane: Annotated[str, typer.Option(
        "--dataplane", help="memory: memory drivers, no packets. ovn: OVN central, per node a DPU namespace "
        "(OVS userspace datapath + ovn-controller) and a host namespace: a bare-metal node's machine (a QEMU "
        "guest) boots from its volume, Redfish/IPMI BMC emulators driving it; a VM node's libvirtd runs its "
        "VMs; needs root.")] = "memory",
    lab_dir: DirOption = None,
) -> None:
    """Start the controller and the nodes' agents, wait until every node is up, print how to use them."""
    state = lifecycle.up(_dir(lab_dir), bm, _say, dataplane=dataplane, vm=vm)
    flag = _dir_flag(lab_dir)
    out = stdout()
    out.print(f"[bold green]Lab is up[/] in {escape(state.dir)}", highlight=False)
    out.print(f"  controller  {state.controller_url}", highlight=False, markup=False)
    out.print(f"  nodes       {', '.join(state.nodes)} (all up)", highlight=False, markup=False)
    out.print(f"  boot image  {state.image}", highlight=False, markup=False)
    for hostname, names in state.namespaces.items():
        out.print(f"  {hostname:<10}  DPU namespace {names['dpu']}, host namespace {names['host']}", highlight=False,
                  markup=False)
    out.print(f"  logs        {Path(state.dir) / 'logs'}", highlight=False, markup=False)
    out.print("Use it from this shell:", highlight=False, markup=False)
    out.print(f'  eval "$(dpustack lab env{flag})"', highlight=False, markup=False)
    out.print("  dpustack node list", highlight=False, markup=False)
    out.print(f"  dpustack image create centos --file {shlex.quote(state.image)}", highlight=False, markup=False)
    if state.namespaces:
        out.print(f"  dpustack lab exec{flag} --server NAME -- ip addr   # inside a server's booted host",
                  highlight=False, markup=False)
    out.print(f"Stop it with: dpustack lab down{flag}", highlight=False, markup=False)


@app.command("down")
def down(lab_dir: DirOption = None) -> None:
    """Stop every process of the lab (SIGTERM, then SIGKILL) and remove its state; logs are kept."""
    state = lifecycle.down(_dir(lab_dir), _say)
    stdout().print(f"Lab in {state.dir} stopped; logs kept in {Path(state.dir) / 'logs'}", highlight=False,
                   markup=False)


@app.command("status")
def status(lab_dir: DirOption = None, fmt: FormatOption = Format.table) -> None:
    """Show each process of the lab and whether it is alive (or stopped, by `lab kill --signal STOP`)."""
    state = lifecycle.load_lab(_dir(lab_dir))
    rows = [{"name": p.name, "role": p.role, "pid": p.pid, "url": p.url, "log": p.log,
             "alive": processes.is_alive(p.pid, p.started), "stopped": processes.is_stopped(p.pid, p.started)}
            for p in state.processes]
    if fmt is Format.json:
        print_json({"dir": state.dir, "controller_url": state.controller_url, "processes": rows})
        return
    table = Table(title=f"Lab in {state.dir}", title_justify="left")
    for header in ("Name", "Role", "PID", "URL", "Alive", "Log"):
        table.add_column(header, overflow="fold")
    for row in rows:
        alive = "[yellow]stopped[/]" if row["stopped"] else "[green]yes[/]" if row["alive"] else "[red]no[/]"
        table.add_row(Text(row["name"]), row["role"], str(row["pid"]), Text(row["url"]), alive, Text(row["log"]))
    stdout().print(table)


def _signal(name: str) -> signal.Signals:
    try:
        return processes.parse_signal(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


ProcessName = Annotated[str, typer.Argument(
    help="A process as `dpustack lab status` names it: controller, dpu-bm-1 (an agent), dpu-bm-1/bmc-redfish, "
         "with --dataplane ovn also dpu-bm-1/ovs-vswitchd, ovn/northd….", show_default=False)]


@app.command("restart")
def restart(name: ProcessName, lab_dir: DirOption = None) -> None:
    """Stop one process of the lab and start its recorded command again, recording the new PID; wait until it
    serves (controller: /healthz; agent: /healthz and its node reporting up; BMC emulator: answering).

    The OVN data plane's daemons cannot be restarted one by one (`lab kill` works on them; `lab soc-reboot
    NODE` restarts a DPU's all together)."""
    old_pid, proc = lab_restart.restart(_dir(lab_dir), name, _say)
    stdout().print(f"Restarted {name}: pid {old_pid} -> {proc.pid}", highlight=False, markup=False)


@app.command("soc-reboot")
def soc_reboot(
    node: Annotated[str, typer.Argument(help="The node whose DPU reboots, as `lab status` names its agent: "
                                             "dpu-bm-1…", show_default=False)],
    lab_dir: DirOption = None,
) -> None:
    """Reboot a DPU's SoC (--dataplane ovn): its agent, Open vSwitch, ovn-controller and qemu-storage-daemon
    stop and its namespace is deleted with every port, representor and storage export; they start again and
    the agent puts the node's instances' functions, ports and volumes back. The host keeps running."""
    agent = lab_restart.soc_reboot(_dir(lab_dir), node, _say)
    stdout().print(f"Rebooted the SoC of {node}: agent pid {agent.pid}", highlight=False, markup=False)


@app.command("kill")
def kill(
    name: ProcessName,
    # the default is a name, parsed by _signal like any other: as signal.SIGTERM --help would show "15"
    sig: Annotated[signal.Signals, typer.Option(
        "--signal", "-s", parser=_signal, metavar="SIGNAL",
        help="Signal name: TERM, KILL, STOP, CONT, INT, HUP, … (with or without SIG).")] = "TERM",  # type: ignore
    lab_dir: DirOption = None,
) -> None:
    """Send a signal to one process of the lab (its process group), for fault tests; wait up to 10 s for it to
    end unless the signal is STOP, CONT or the like.

    The lab keeps its record: `lab status` shows it dead, `lab restart NAME` starts it again, `lab down` stops
    the rest."""
    running = lab_restart.kill(_dir(lab_dir), name, sig)
    state = f"it is still running; stop it with: dpustack lab kill {name} --signal KILL{_dir_flag(lab_dir)}"
    if sig in lab_restart.STOPPING:
        state = f"it is stopped; resume it with: dpustack lab kill {name} --signal CONT{_dir_flag(lab_dir)}"
    elif sig in lab_restart.NOT_ENDING:
        state = "it is running" if running else "it has exited"
    elif not running:
        state = f"it has exited; start it again with: dpustack lab restart {name}{_dir_flag(lab_dir)}"
    stdout().print(f"Sent {sig.name} to {name}: {state}", highlight=False, markup=False)


@app.command("env")
def env(lab_dir: DirOption = None) -> None:
    """Print shell exports for the lab's controller (URL, admin token, the lab CA that verifies its
    certificate): eval "$(dpustack lab env)"."""
    state = lifecycle.load_lab(_dir(lab_dir))
    if not lifecycle.is_running(state):
        stderr().print(f"warning: the lab in {state.dir} is not fully running (see: dpustack lab status"
                       f"{_dir_flag(lab_dir)})", markup=False)
    typer.echo(f"export DPUSTACK_URL={shlex.quote(state.controller_url)}")
    typer.echo(f"export DPUSTACK_TOKEN={shlex.quote(state.admin_token())}")
    if state.ca_file:
        typer.echo(f"export DPUSTACK_CACERT={shlex.quote(state.ca_file)}")


def _ovn_lab(lab_dir: Path | None):
    state = lifecycle.load_lab(_dir(lab_dir))
    if not state.namespaces:
        raise LabError(f"the lab in {state.dir} has no namespaces: start it with `dpustack lab up --dataplane ovn`")
    return state


def _command_channel(state, server: str) -> str:
    """The command channel's socket of `server`'s booted host (bare metal) or VM, found through the lab's
    controller."""
    with state.client() as client:
        instance = client.get(f"/v1/instances/{server}")
    node = instance.get("node")
    if node in state.machines:
        return state.machines[node]["command"]
    if node in state.hypervisors:
        return str(command_socket(Path(state.hypervisors[node]["commands"]), instance["id"]))
    raise LabError(f"server {server} is on no node of this lab (node: {node or 'none yet'})")


@app.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def exec_(
    args: Annotated[list[str], typer.Argument(
        help="NAME (a node's DPU or host namespace, e.g. dpu-bm-1, host-bm-1; not with --server), then "
             "the command, after --.", show_default=False)],
    server: Annotated[str | None, typer.Option(
        "--server", help="Run inside this server (name or id): the booted host machine of its bare-metal node or "
             "its VM, "
             "over its command channel (the host image's agent on ttyS1).")] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="With --server: seconds the command may run before the host kills it.", min=1)] = 60.0,
    lab_dir: DirOption = None,
) -> None:
    """Run a command in a namespace of a `--dataplane ovn` lab, or in a server's host; exit with its exit code."""
    state = _ovn_lab(lab_dir)
    args = list(args)
    namespace = None
    if server is None:
        if not args:
            raise LabError("give a namespace NAME or --server S, then the command after --")
        namespace = args.pop(0)
        if namespace not in state.all_namespaces():
            raise LabError(f"'{namespace}' is no namespace of this lab; it has: {', '.join(state.all_namespaces())}")
    if args and args[0] == "--":
        args.pop(0)
    if not args:
        raise LabError("no command given: dpustack lab exec NAME -- CMD...")
    if namespace is not None:
        raise typer.Exit(subprocess.run(["ip", "netns", "exec", namespace, *args], check=False).returncode)
    status, output = guest_agent.run(_command_channel(state, server), args, timeout=timeout)
    sys.stdout.buffer.write(output)
    sys.stdout.buffer.flush()
    raise typer.Exit(status)


@app.command("metadata")
def metadata(
    server: Annotated[str, typer.Option("--server", help="The server (name or id) whose host asks.")],
    path: Annotated[str, typer.Argument(help="Path under http://169.254.169.254/.")] = "openstack/latest/meta_data.json",
    lab_dir: DirOption = None,
) -> None:
    """Fetch a metadata path from inside a server's booted host, as its cloud-init did at boot."""
    state = _ovn_lab(lab_dir)
    url = f"http://{metadata_port.METADATA_IP}/{path.lstrip('/')}"
    status, output = guest_agent.run(_command_channel(state, server), f"timeout 10 wget -q -O - {shlex.quote(url)}", timeout=15)
    if status != 0:
        raise LabError(f"metadata {path}: the host's wget failed (exit {status}): "
                       f"{output.decode(errors='replace').strip() or 'no answer'}")
    stdout().out(output.decode(errors="replace"), end="" if output.endswith(b"\n") else "\n", highlight=False)


def demo(
    dataplane: Annotated[str, typer.Option(
        "--dataplane", help="memory: every bare-metal and PCI flow on memory drivers. ovn: an OVN lab (needs "
        "root; what `make demo` runs); two servers' hosts boot from their volumes, get their address by DHCP "
        "and apply their own metadata from 169.254.169.254, pings across Geneve are blocked, then allowed by a "
        "security group rule, rate limits are measured, a hot-added NIC gets its address and a removed one "
        "goes silent; a VM boots, is resized, paused, stopped and started, and migrates cold, live, and "
        "between bare metal and VM.")] = "memory",
) -> None:
    """Start a lab in a temporary directory (3 bare-metal nodes; with ovn 2 bare-metal and 2 VM nodes), run its
    flows, print the verdicts, tear down; exit 0 if all passed."""
    results, lab_dir = run_demo(_say, _report, dataplane=dataplane)
    stdout().print(_results_table(results, dataplane))
    failed = next((r for r in results if r.result == "failed"), None)
    if failed is not None:
        raise LabError(f"flow '{failed.name}' failed: {failed.message}\n(lab logs kept in {lab_dir / 'logs'})")
    stdout().print(f"[bold green]All {len(results)} flows passed.[/]")


def _report(result: FlowResult) -> None:
    mark = {"passed": "[green]✓[/]", "failed": "[red]✗[/]"}.get(result.result, "[dim]-[/]")
    stderr().print(f"{mark} {escape(result.name)} [dim]{result.seconds:.2f}s[/]")


def _results_table(results: list[FlowResult], dataplane: str = "memory") -> Table:
    title = "OVN data plane flows" if dataplane == "ovn" else "bare-metal and PCI flows"
    table = Table(title=f"dpustack demo: {title}", title_justify="left")
    table.add_column("Flow")
    table.add_column("Result")
    table.add_column("Duration", justify="right")
    colour = {"passed": "green", "failed": "red", "skipped": "dim"}
    for r in results:
        table.add_row(r.name, f"[{colour[r.result]}]{r.result}[/]", f"{r.seconds:.2f}s" if r.seconds else "-")
    return table


def register(cli: typer.Typer) -> None:
    """Add `dpustack lab …` and `dpustack demo` to the `dpustack` command (entry point ``dpustack.cli``)."""
    cli.add_typer(app, name="lab")
    cli.command("demo")(demo)
