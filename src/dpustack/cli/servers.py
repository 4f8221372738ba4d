"""`dpustack server …`: instances and their lifecycle (every long action takes --wait)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dpustack.cli import console_session
from dpustack.cli.context import CliUsageError, api
from dpustack.cli.keypairs import read_text_file
from dpustack.cli.numa import placement_text
from dpustack.cli.output import FormatOption, Format, print_list, print_one, stderr, stdout
from dpustack.cli.parsing import nic as parse_nic
from dpustack.cli.pci import dev_type, vendor_product
from dpustack.cli.progress import WaitOption, follow

app = typer.Typer(help="Create servers (instances) and run their lifecycle.", no_args_is_help=True)

Server = Annotated[str, typer.Argument(help="Server name or id.")]

LIST_COLUMNS = [("ID", "id"), ("Name", "name"), ("Status", "status"), ("Task", "task_state"),
                ("Node", "node"), ("Ports", lambda s: len(s.get("ports") or [])),
                ("Volumes", lambda s: len(s.get("volumes") or []))]
SHOW_FIELDS = [("id", "id"), ("name", "name"), ("status", "status"), ("task_state", "task_state"),
               ("node", "node"), ("numa_placement", placement_text), ("flavor", lambda s: _flavor(s)),
               ("flavor_id", "flavor_id"), ("old_flavor", lambda s: _old_flavor(s)),
               ("source_node", lambda s: _source_node(s)),
               ("image_id", "image_id"),
               ("project_id", "project_id"), ("key_name", "key_name"), ("nics", lambda s: _nics(s.get("nics"))),
               ("disks", lambda s: _disks(s.get("disks"))),
               ("fault", lambda s: _fault_text(s.get("fault"))),
               ("created_at", "created_at"), ("updated_at", "updated_at")]


def _flavor(server: dict[str, Any]) -> str | None:
    """The flavor's name with its vCPUs and memory."""
    if not server.get("flavor"):
        return None
    return f"{server['flavor']} ({server.get('vcpus')} vCPU, {server.get('ram')} MiB)"


def _old_flavor(server: dict[str, Any]) -> str | None:
    """While a resize or a migration waits for its confirm or revert: the flavor before it, whose claims it
    holds."""
    old = server.get("old_flavor")
    if not old:
        return None
    commands = "migrate-confirm or migrate-revert" if server.get("source_node") else "resize-confirm or resize-revert"
    return f"{old.get('name') or old.get('id')} ({old.get('vcpus')} vCPU, {old.get('ram')} MiB; held until {commands})"


def _source_node(server: dict[str, Any]) -> str | None:
    """While a migration waits for its confirm or revert: the node it left, whose claims it holds."""
    source = server.get("source_node")
    return f"{source} (held until migrate-confirm or migrate-revert)" if source else None


def _nics(nics: list[dict[str, Any]] | None) -> str | None:
    """One line per port: its id, MAC, address and the BDF of the function carrying it."""
    return "\n".join(f"{n['port_id']} {n['mac_address']} {n.get('ip_address') or '-'} at {n.get('bdf') or '-'}"
                     for n in nics or []) or None


def _disks(disks: list[dict[str, Any]] | None) -> str | None:
    """One line per volume: its id, whether it boots, and the BDF of the function serving it."""
    return "\n".join(f"{d['volume_id']}{' (boot)' if d.get('bootable') else ''} at {d.get('bdf') or '-'}"
                     for d in disks or []) or None


def _pci_source(request: dict[str, Any]) -> str:
    return f"nic {request.get('nic_index')}" if request.get("source") == "nic" else str(request.get("source"))


def _pci_devices(request: dict[str, Any]) -> str | None:
    """One line per allocated device: address, type, vendor:product and, for a DPU, its card serial."""
    lines = [" ".join(filter(None, (d.get("address"), dev_type(d.get("dev_type")), vendor_product(d),
                                     d.get("card_serial_number") and f"card {d['card_serial_number']}")))
             for d in request.get("devices") or []]
    return "\n".join(lines) or None


PCI_REQUEST_COLUMNS = [("Source", _pci_source), ("Count", "count"), ("PCI flavors", "flavors"),
                       ("Devices", _pci_devices)]


def _fault_text(fault: dict[str, Any] | None) -> str | None:
    if not fault:
        return None
    return f"{fault.get('message')} (step {fault.get('step')}, operation {fault.get('operation_id')})"


def _settle(op: dict[str, Any] | None, label: str) -> None:
    """After a waited action, say what state the server is in now."""
    if op is None or not op.get("instance_id"):
        return
    server = api().get(f"/v1/instances/{op['instance_id']}")
    where = f" on {server['node']}" if server.get("node") else ""
    stdout().print(f"{label}: server {server['name']} is {server['status']}{where}", highlight=False,
                   markup=False)


@app.command("list")
def list_servers(fmt: FormatOption = Format.table) -> None:
    """List servers."""
    print_list(api().get("/v1/instances"), LIST_COLUMNS, fmt)


@app.command("show")
def show(server: Server, fmt: FormatOption = Format.table) -> None:
    """Show one server, including its fault if it failed, a VM's NUMA placement (host cells, pinned CPUs) and
    its PCI requests with their devices."""
    instance = api().get(f"/v1/instances/{server}")
    print_one(instance, SHOW_FIELDS, fmt)
    if fmt is Format.table and instance.get("pci_requests"):
        print_list(instance["pci_requests"], PCI_REQUEST_COLUMNS, fmt, title="PCI requests")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Name of the new server.")],
    flavor: Annotated[str, typer.Option(help="Flavor name or id.")],
    image: Annotated[str | None, typer.Option(help="Image to boot from (name or id).")] = None,
    network: Annotated[list[str] | None, typer.Option(help="Network to attach a new NIC to (repeatable).")] = None,
    port: Annotated[list[str] | None, typer.Option(help="Existing port to attach (repeatable).")] = None,
    nic: Annotated[list[str] | None, typer.Option(
        "--nic", metavar="net-id=NET[,KEY=VALUE...]",
        help="A NIC (repeatable): net-id=NET or port-id=PORT, optionally pci-flavor=1:FLAVOR[,FLAVOR] and "
             "vnic-type=normal|direct|remote-managed, and with net-id security-group=GROUP (repeatable; "
             "default: the project's default group). NICs are ordered --network, then --port, then --nic.")] = None,
    user_data: Annotated[str | None, typer.Option(help="User data handed to the server.")] = None,
    node: Annotated[str | None, typer.Option(help="Pin to this node (hostname or id; admin only).")] = None,
    key_name: Annotated[str | None, typer.Option(help="Key pair whose public key the server gets.")] = None,
    admin_pass: Annotated[str | None, typer.Option(
        help="Password the server gets through the metadata service (stored encrypted, never shown).")] = None,
    user_data_file: Annotated[Path | None, typer.Option(
        help="Read the user data from this file (e.g. a cloud-config), instead of --user-data.")] = None,
    wait: WaitOption = False,
) -> None:
    """Create a server: schedule it, plug its NICs and volumes, power it on."""
    if user_data is not None and user_data_file is not None:
        raise typer.BadParameter("give --user-data or --user-data-file, not both")
    if user_data_file is not None:
        user_data = read_text_file(user_data_file, "--user-data-file")
    nics = [{"network": n} for n in network or []] + [{"port": p} for p in port or []]
    nics += [parse_nic(text) for text in nic or []]
    body: dict[str, Any] = {"name": name, "flavor": flavor, "networks": nics}
    for key, value in (("image", image), ("user_data", user_data), ("node", node), ("key_name", key_name),
                       ("admin_pass", admin_pass)):
        if value is not None:
            body[key] = value
    label = f"create {name}"
    _settle(follow(api().post("/v1/instances", body), wait, label), label)


@app.command("delete")
def delete(
    server: Server,
    force: Annotated[bool, typer.Option(
        "--force", help="Admin only: release the server's node claim, NICs and volumes in the controller "
                        "without calling its node (for a node that is gone); the node is not cleaned.")] = False,
    wait: WaitOption = False,
) -> None:
    """Delete a server, releasing its node, NICs and volumes."""
    label = f"delete {server}"
    op = follow(api().delete(f"/v1/instances/{server}", force="true" if force else None), wait, label)
    if op is None:
        return
    stdout().print(f"{label}: server deleted", highlight=False, markup=False)
    for step in op.get("steps") or []:
        if (step.get("detail") or {}).get("warning"):
            stderr().print(f"warning: {step['detail']['warning']}", highlight=False, markup=False)


def _action(server: str, path: str, label: str, wait: bool, body: dict[str, Any] | None = None) -> None:
    _settle(follow(api().post(f"/v1/instances/{server}/{path}", body), wait, label), label)


@app.command("stop")
def stop(server: Server, wait: WaitOption = False) -> None:
    """Power a server off (a paused VM is resumed first, so that its OS shuts down)."""
    _action(server, "stop", f"stop {server}", wait)


@app.command("start")
def start(server: Server, wait: WaitOption = False) -> None:
    """Power a server on."""
    _action(server, "start", f"start {server}", wait)


@app.command("pause")
def pause(server: Server, wait: WaitOption = False) -> None:
    """Pause a VM server: its vCPUs stop, its memory is kept (PAUSED). Bare-metal servers cannot be paused."""
    _action(server, "pause", f"pause {server}", wait)


@app.command("unpause")
def unpause(server: Server, wait: WaitOption = False) -> None:
    """Unpause a paused VM server: it runs on where it was (ACTIVE)."""
    _action(server, "unpause", f"unpause {server}", wait)


@app.command("resize")
def resize(
    server: Server,
    flavor: Annotated[str, typer.Argument(help="The new flavor (a vm flavor), name or id.")],
    wait: WaitOption = False,
) -> None:
    """Give a VM server another flavor on its node: stopped if it runs, defined again with the flavor's vCPUs,
    memory and NUMA placement, started again (RESIZE, then VERIFY_RESIZE). Both flavors' resources stay claimed
    until `server resize-confirm` (keep the new one) or `server resize-revert` (back to the old one). A flavor
    that does not fit on the server's node is refused, saying why; bare-metal servers cannot be resized."""
    _action(server, "resize", f"resize {server} {flavor}", wait, {"flavor": flavor})


@app.command("resize-confirm")
def resize_confirm(server: Server, wait: WaitOption = False) -> None:
    """Keep a resized VM's new flavor (from VERIFY_RESIZE): the old flavor's resources are freed on its node.
    Nothing runs on the node, so this is done at once (--wait has nothing to wait for)."""
    instance = api().post(f"/v1/instances/{server}/resize-confirm")
    stdout().print(f"resize-confirm {server}: server {instance['name']} is {instance['status']} with flavor "
                   f"{instance.get('flavor')}", highlight=False, markup=False)


@app.command("resize-revert")
def resize_revert(server: Server, wait: WaitOption = False) -> None:
    """Give a resized VM its old flavor back (from VERIFY_RESIZE): defined again with it, stopped and started
    again if it runs; the new flavor's resources are freed."""
    _action(server, "resize-revert", f"resize-revert {server}", wait)


@app.command("migrate")
def migrate(
    server: Server,
    node: Annotated[str | None, typer.Option("--node", help="The target node, hostname or id (admin only); "
                                                            "default: the scheduler's choice.")] = None,
    flavor: Annotated[str | None, typer.Option("--flavor", help="The flavor on the target, name or id: one of "
                                                                "the other type moves a VM to bare metal or a "
                                                                "host to a VM; default: its own.")] = None,
    live: Annotated[bool, typer.Option("--live", help="A live migration of a running VM: its guest runs on, "
                                                      "ACTIVE on the target after (no confirm).")] = False,
    abort: Annotated[bool, typer.Option("--abort", help="Abort the server's live migration while its memory "
                                                        "moves: it runs on where it was.")] = False,
    wait: WaitOption = False,
) -> None:
    """Move a server cold to another node, on the same ports (MACs, addresses) and volumes: stopped on its node,
    built on the target (started again if it ran), its ports' binding moved, its functions taken from the old
    node (MIGRATING, then VERIFY_MIGRATE). Both nodes' resources stay claimed until `server migrate-confirm`
    (keep the new node) or `server migrate-revert` (back to the old one). With --live a running VM moves while
    its guest runs on (its NICs are away for the switch-over) and is ACTIVE on the target after; --abort stops
    that while its memory moves (--wait: until it is back on its node). What cannot move is refused, saying
    why."""
    if abort:
        op = api().post(f"/v1/instances/{server}/migrate-abort")
        stdout().print(f"migrate --abort {server}: operation {op['id']} is aborting", highlight=False, markup=False)
        if wait:
            for op in api().watch_operation(op["id"]):
                pass
            _settle(op, f"migrate --abort {server}")
        return
    body: dict[str, Any] = {"node": node, "flavor": flavor}
    if live:
        body["live"] = True
    target = f" to {node}" if node else ""
    _action(server, "migrate", f"migrate {server}{target}", wait, {k: v for k, v in body.items() if v is not None})


@app.command("migrate-confirm")
def migrate_confirm(server: Server, wait: WaitOption = False) -> None:
    """Keep a migrated server on its new node (from VERIFY_MIGRATE): the old node's resources are freed.
    Nothing runs on a node, so this is done at once (--wait has nothing to wait for)."""
    instance = api().post(f"/v1/instances/{server}/migrate-confirm")
    stdout().print(f"migrate-confirm {server}: server {instance['name']} is {instance['status']} on "
                   f"{instance.get('node')}", highlight=False, markup=False)


@app.command("migrate-revert")
def migrate_revert(server: Server, wait: WaitOption = False) -> None:
    """Bring a migrated server back to its old node (from VERIFY_MIGRATE): stopped on the new one, built again on
    the old one with its old flavor, same ports and volumes; the new node's resources are freed."""
    _action(server, "migrate-revert", f"migrate-revert {server}", wait)


@app.command("reboot")
def reboot(
    server: Server,
    hard: Annotated[bool, typer.Option("--hard", help="Power-cycle instead of a soft (ACPI) reboot.")] = False,
    wait: WaitOption = False,
) -> None:
    """Reboot a server (soft unless --hard)."""
    kind = "hard" if hard else "soft"
    _action(server, "reboot", f"{kind} reboot {server}", wait, {"type": kind})


def _password_from_stdin() -> str:
    """The first line of standard input, without its line ending (blanks are part of a password)."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliUsageError("--password-stdin: standard input holds no password on its first line")
    return password


@app.command("set-password")
def set_password(
    server: Server,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input (for scripts) "
                                 "instead of prompting for it.")] = False,
    wait: WaitOption = False,
) -> None:
    """Give a server a new admin password, asked twice without echo. A VM gets it for root now, through its
    guest agent (an operation: --wait follows it); a bare-metal host takes it at its next boot.

    The password goes to the controller, which keeps it encrypted and hands it to the server through the
    metadata service (and, for a VM, to its node's agent); it is never a command-line argument.
    """
    password = _password_from_stdin() if password_stdin else typer.prompt(
        "New password", hide_input=True, confirmation_prompt=True)
    label = f"set-password {server}"
    op = api().post(f"/v1/instances/{server}/admin-password", {"new_password": password})
    if op is None:  # 204: a bare-metal host, no operation
        stdout().print(f"{label}: stored; the server takes it at its next boot "
                       f"(e.g. dpustack server reboot {server})", highlight=False, markup=False)
        return
    if follow(op, wait, label) is not None:
        stdout().print(f"{label}: root's password is set in the VM", highlight=False, markup=False)


@app.command("add-nic")
def add_nic(
    server: Server,
    network: Annotated[str | None, typer.Option(help="Network to create the new port on.")] = None,
    port: Annotated[str | None, typer.Option(help="Existing port to attach instead.")] = None,
    wait: WaitOption = False,
) -> None:
    """Hot-plug a NIC: a new port on --network, or an existing --port."""
    if (network is None) == (port is None):
        raise typer.BadParameter("give exactly one of --network or --port")
    body = {"network": network} if network is not None else {"port": port}
    _action(server, "nics", f"add-nic {server}", wait, body)


@app.command("remove-nic")
def remove_nic(
    server: Server,
    port_id: Annotated[str, typer.Argument(help="Id of the port to detach (see `dpustack port list --server`).")],
    wait: WaitOption = False,
) -> None:
    """Hot-unplug a NIC."""
    label = f"remove-nic {server}"
    _settle(follow(api().delete(f"/v1/instances/{server}/nics/{port_id}"), wait, label), label)


@app.command("add-volume")
def add_volume(
    server: Server,
    volume: Annotated[str, typer.Argument(help="Volume name or id.")],
    wait: WaitOption = False,
) -> None:
    """Attach a volume through a storage function of the server's DPU."""
    _action(server, "volumes", f"add-volume {server} {volume}", wait, {"volume": volume})


@app.command("remove-volume")
def remove_volume(
    server: Server,
    volume: Annotated[str, typer.Argument(help="Volume name or id.")],
    wait: WaitOption = False,
) -> None:
    """Detach a volume."""
    label = f"remove-volume {server} {volume}"
    _settle(follow(api().delete(f"/v1/instances/{server}/volumes/{volume}"), wait, label), label)


@app.command("console")
def console(
    server: Server,
    url: Annotated[bool, typer.Option("--url", help="Show how the BMC offers the console instead of attaching.")]
    = False,
    linger: Annotated[float | None, typer.Option(
        "--for", min=0, help="Leave after this many seconds (stdin may end before).")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format of --url's answer.")] = Format.table,
) -> None:
    """Attach to the server's serial console (Ctrl-] leaves); others attached see the same console."""
    if url:
        print_one(api().get(f"/v1/instances/{server}/console"), [("type", "type"), ("url", "url")], fmt)
        return
    connection = api().open_console(server)
    if sys.stdin.isatty():
        stderr().print(f"Connected to the console of {server}; Ctrl-] leaves.")
    why = console_session.run(connection, linger=linger)
    if sys.stdin.isatty() or why == "closed":
        stderr().print(f"\r\nConsole of {server}: {why}.")


@app.command("console-log")
def console_log(
    server: Server,
    limit: Annotated[int, typer.Option("--limit", min=0, help="How many of the newest bytes.")] = 65536,
) -> None:
    """Print what the server wrote on its serial console since it was built (its node keeps the log)."""
    sys.stdout.buffer.write(api().console_log(server, limit))
    sys.stdout.flush()


