"""The host image's init, run on the build machine where it can be: its JSON reader (json.awk) with busybox awk,
its step lines with busybox sh, its metadata fetch with busybox wget against a local server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpustack.lab import host_init
from dpustack.lab.guest_initramfs import BUSYBOX

SCRIPTS = resources.files(host_init)
C_LOCALE = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}


def json_values(document: bytes, path: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(BUSYBOX), "awk", "-v", f"path={path}", "-f", str(SCRIPTS / "json.awk")],
                          input=document, capture_output=True, env=C_LOCALE, check=False, timeout=10)


def leaves(value, at: tuple[str, ...] = ()):
    """(path, text json.awk prints) of every scalar in a decoded document."""
    if isinstance(value, dict):
        for name, member in value.items():
            yield from leaves(member, (*at, name))
    elif isinstance(value, list):
        for index, member in enumerate(value):
            yield from leaves(member, (*at, str(index)))
    elif isinstance(value, str):
        yield at, value.replace("\0", "")
    else:
        yield at, json.dumps(value)


def matches(path: tuple[str, ...], pattern: str) -> bool:
    parts = pattern.split("/")
    return len(parts) == len(path) and all(want in ("*", got) for want, got in zip(parts, path))


METADATA = {
    "uuid": "0b5c2f3e-7d41-4a36-9a57-2f1f0c8e4d21",
    "hostname": "web1.novalocal",
    "admin_pass": 'p"a\\ss/\u00e9\U0001F600',
    "public_keys": {"a": "ssh-ed25519 AAAA a@x\n", "b": "ssh-rsa BBBB b@y"},
    "keys": [{"name": "a", "type": "ssh", "data": "ssh-ed25519 AAAA a@x\n"}],
    "launch_index": 0, "meta": {}, "devices": [], "weight": -1.5e3, "on": True, "off": None,
}


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("path, expected", [
    ("uuid", ["0b5c2f3e-7d41-4a36-9a57-2f1f0c8e4d21"]),
    ("hostname", ["web1.novalocal"]),
    ("admin_pass", ['p"a\\ss/\u00e9\U0001F600']),
    ("public_keys/*", ["ssh-ed25519 AAAA a@x\n", "ssh-rsa BBBB b@y"]),
    ("keys/*/data", ["ssh-ed25519 AAAA a@x\n"]),
    ("keys/0/name", ["a"]),
    ("launch_index", ["0"]), ("weight", ["-1.5e3"]), ("on", ["true"]), ("off", ["null"]),
    ("meta", []), ("public_keys", []), ("name", []), ("uuid/x", []),
])
def test_json_awk_prints_the_values_at_a_path(path, expected, ensure_ascii):
    document = json.dumps(METADATA, ensure_ascii=ensure_ascii, indent=1).replace("-1500.0", "-1.5e3")
    done = json_values(document.encode(), path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(value + "\n" for value in expected).encode()


@pytest.mark.parametrize("path, expected", [("a/INFINITY", b"null\n"), ("a/NAN", b"1\n"), ("a/1", b""),
                                            ("a/1e0", b"2\n")])
def test_json_awk_compares_names_as_strings_even_those_that_look_like_numbers(path, expected):
    done = json_values(b'{"a": {"INFINITY": null, "NAN": 1, "1e0": 2}}', path)
    assert (done.returncode, done.stdout) == (0, expected)


@pytest.mark.parametrize("document", [b"", b"{", b'{"a":1,}', b'{"a":01}', b'{"a":1} x', b'{"a":"\\x"}',
                                      b'{"a":"\\u12G4"}', b"[1 2]", b'{"a" 1}', b'{1:2}', b"nul", b'"open'])
def test_json_awk_refuses_what_is_not_json_and_prints_nothing(document):
    done = json_values(document, "a")
    assert (done.returncode, done.stdout) == (2, b"")


# text a document can carry (no lone surrogates); member names also fit in a path (no "/") and in
# awk's -v path= (no NUL, no backslash, which awk reads as an escape)
json_text = st.characters(blacklist_categories=("Cs",))
member_names = st.text(st.characters(blacklist_characters="/\\\0", blacklist_categories=("Cs",)), min_size=1,
                       max_size=8)
json_documents = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(json_text, max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(member_names, children, max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(document=st.dictionaries(st.sampled_from(["uuid", "name", "k"]), json_documents, min_size=1),
       ensure_ascii=st.booleans(), data=st.data())
def test_json_awk_agrees_with_pythons_json(document, ensure_ascii, data):
    found = list(leaves(document))
    pattern = data.draw(st.sampled_from(["/".join(path) for path, _ in found] + ["k/*", "uuid", "*/*/*"])
                        if found else st.just("uuid"))
    done = json_values(json.dumps(document, ensure_ascii=ensure_ascii).encode(), pattern)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(text + "\n" for path, text in found if matches(path, pattern)).encode()


def run_sh(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUSYBOX), "sh", "-c", f". {SCRIPTS / 'lib.sh'}\n{script}"], capture_output=True,
                          text=True, check=False, timeout=30,
                          env={"DPUSTACK_CONSOLE": str(tmp_path / "console"), "DPUSTACK_RUN": str(tmp_path), **env})


def test_say_prints_one_json_step_line_whatever_the_values(tmp_path):
    done = run_sh("""say boot disk /dev/vda bdf 0000:41:00.0
say keys -n count 2 -n bad 1x -n zero 0 -n padded 007
say failed what "a \\"quoted\\" \\\\path" why "$(printf 'tab\\there\\nnewline')"
say ready""", tmp_path)
    assert done.returncode == 0, done.stderr
    console = (tmp_path / "console").read_text()
    assert all(line.startswith(host_init.STEP_PREFIX) for line in console.splitlines())
    assert host_init.step_lines(console) == [
        {"step": "boot", "disk": "/dev/vda", "bdf": "0000:41:00.0"},
        {"step": "keys", "count": 2, "bad": "1x", "zero": 0, "padded": "007"},
        {"step": "failed", "what": 'a "quoted" \\path', "why": "tabherenewline"},
        {"step": "ready"},
    ]


def test_step_lines_are_found_among_other_console_output():
    console = ("\r\nSYSLINUX 6.04\r\n" + host_init.STEP_PREFIX + '{"step":"boot","disk":"/dev/vda"}\r\n'
               "[ 1.0] kernel noise " + host_init.STEP_PREFIX + '{"step":"dhcp"}\r\n'
               + host_init.STEP_PREFIX + '{"step":"cut off\r\n' + host_init.STEP_PREFIX + '["no", "step"]\n'
               + host_init.STEP_PREFIX + '{"step":"ready"}')
    assert host_init.step_lines(console) == [{"step": "boot", "disk": "/dev/vda"}, {"step": "dhcp"},
                                             {"step": "ready"}]


@pytest.fixture
def metadata_service():
    """A local HTTP server with a meta_data.json and no user_data; its base URL."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(METADATA).encode() if self.path == "/latest/meta_data.json" else None
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/latest"
    server.shutdown()
    server.server_close()


def test_fetch_gets_a_document_and_tells_a_missing_one_apart(tmp_path, metadata_service):
    done = run_sh(f""". {SCRIPTS / 'metadata.sh'}
METADATA={metadata_service}
JSON_AWK={SCRIPTS / 'json.awk'}
fetch meta_data.json "$RUN/meta_data.json"; echo "meta_data $?"
meta uuid
meta 'public_keys/*'
fetch user_data "$RUN/user-data"; echo "user_data $?"
""", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["meta_data 0", METADATA["uuid"], "ssh-ed25519 AAAA a@x", "",
                                        "ssh-rsa BBBB b@y", "user_data 2"]
    assert not (tmp_path / "user-data").exists()


def test_the_guest_files_are_whole_and_every_script_parses():
    scripts, files = host_init.guest_scripts(), host_init.guest_files()
    for path, text in scripts.items():
        assert text.startswith("#!/bin/sh\n"), path
    for path, text in [*scripts.items(), *((p, f.decode()) for p, f in files.items() if p.endswith(".sh"))]:
        done = subprocess.run([str(BUSYBOX), "sh", "-n", "-c", text], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{path}: {done.stderr}"
    for line in files["etc/inittab"].decode().splitlines():
        if line and not line.startswith("#"):
            assert line.split(":", 3)[3].split()[0].lstrip("/") in scripts, line
    assert files["etc/passwd"].startswith(b"root:x:0:0:") and files["etc/shadow"].startswith(b"root:*:")


def test_the_content_hash_follows_the_scripts(monkeypatch):
    before = host_init.content_hash()
    assert host_init.content_hash() == before
    original = host_init.source
    monkeypatch.setattr(host_init, "source", lambda name: original(name) + ("\n" if name == "agent" else ""))
    assert host_init.content_hash() != before


# ------------------------------------------------------------------ the power button
EVENT = bytes(24)  # one struct input_event; what a press gives is two or more of them


@dataclass
class Buttons:
    """A made-up input subsystem for the power-button script: sysfs names, event devices (FIFOs)."""

    root: Path
    console: Path
    powered_off: Path

    def env(self) -> dict[str, str]:
        return {"DPUSTACK_INPUT": str(self.root / "sys"), "DPUSTACK_EVENTS": str(self.root / "dev"),
                "DPUSTACK_CONSOLE": str(self.console), "DPUSTACK_RUN": str(self.root),
                "DPUSTACK_POWEROFF": str(self.root / "poweroff"), "PATH": "/usr/bin:/bin"}

    def device(self, event: str, name: str) -> Path:
        (self.root / "sys" / event / "device").mkdir(parents=True)
        (self.root / "sys" / event / "device" / "name").write_text(name + "\n")
        fifo = self.root / "dev" / event
        fifo.parent.mkdir(exist_ok=True)
        os.mkfifo(fifo)
        return fifo

    def run(self, timeout: float = 10.0) -> tuple[int, float]:
        """Run the script as busybox init's sysinit does; (exit status, seconds until it returned). Its
        watchers outlive it, so its output goes to a file, not to pipes that would stay open."""
        started = time.monotonic()
        with (self.root / "output").open("wb") as output:
            done = subprocess.run([str(BUSYBOX), "sh", str(SCRIPTS / "power-button")], stdin=subprocess.DEVNULL,
                                  stdout=output, stderr=output, env=self.env(), timeout=timeout, check=False)
        return done.returncode, time.monotonic() - started

    def steps(self) -> list[dict]:
        return host_init.step_lines(self.console.read_text()) if self.console.exists() else []


@pytest.fixture
def buttons(tmp_path: Path):
    made = Buttons(tmp_path, tmp_path / "console", tmp_path / "powered-off")
    (tmp_path / "poweroff").write_text(f"#!/bin/sh\necho powered off > {made.powered_off}\n")
    (tmp_path / "poweroff").chmod(0o755)
    yield made
    for pid in readers_of(*(tmp_path / "dev").glob("event*")):  # a watcher still waiting
        os.kill(pid, signal.SIGKILL)


def readers_of(*paths: Path) -> list[int]:
    """The processes (not this one) holding one of ``paths`` open."""
    wanted = {os.stat(path).st_ino for path in paths}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fds = [os.stat(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(fd.st_ino in wanted for fd in fds):
            found.append(int(pid))
    return found


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_power_button_is_watched_once_the_script_returns_and_a_press_powers_off(buttons):
    buttons.device("event0", "AT Translated Set 2 keyboard")
    button = buttons.device("event3", "Power Button")
    writer = os.open(button, os.O_RDWR)  # a FIFO opens for reading only with a writer
    try:
        status, took = buttons.run()
        assert status == 0 and took < 5, (buttons.root / "output").read_text()
        # returned with the device held open by a watcher: a press from now on is seen
        assert readers_of(button)
        assert readers_of(buttons.root / "dev/event0") == [] and buttons.steps() == []
        os.write(writer, EVENT * 2)
        assert wait_until(buttons.powered_off.exists), buttons.steps()
    finally:
        os.close(writer)
    assert buttons.steps() == [{"step": "poweroff"}]
    assert buttons.powered_off.read_text() == "powered off\n"


def test_a_power_button_device_that_closes_is_not_a_press(buttons):
    button = buttons.device("event1", "Power Button")
    writer = os.open(button, os.O_RDWR)
    assert buttons.run()[0] == 0
    os.close(writer)  # the end of the device, no event
    assert wait_until(lambda: buttons.steps() != [])
    assert buttons.steps() == [{"step": "failed", "what": "power-button", "why": f"{buttons.root}/dev/event1 closed"}]
    assert not buttons.powered_off.exists()


def test_without_a_power_button_the_script_says_so_and_init_goes_on(buttons):
    buttons.device("event0", "AT Translated Set 2 keyboard")
    status, took = buttons.run()
    assert status == 0 and took < 5
    assert buttons.steps() == [{"step": "failed", "what": "power-button",
                                "why": "no input device is named Power Button"}]


def test_the_shutdown_action_says_the_system_goes_down(tmp_path):
    done = subprocess.run([str(BUSYBOX), "sh", str(SCRIPTS / "shutdown")], capture_output=True, text=True,
                          timeout=10, check=False,
                          env={"DPUSTACK_CONSOLE": str(tmp_path / "console"), "DPUSTACK_RUN": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert host_init.step_lines((tmp_path / "console").read_text()) == [{"step": "shutdown"}]


def test_init_watches_the_power_button_before_anything_else_and_says_when_it_goes_down():
    actions = [line.split(":", 3)[2:] for line in host_init.guest_files()["etc/inittab"].decode().splitlines()
               if line and not line.startswith("#")]
    assert actions[0] == ["sysinit", "/etc/dpustack/power-button"]  # init starts the rest once it returned
    assert [action for action, _ in actions].count("sysinit") == 1
    assert ["shutdown", "/etc/dpustack/shutdown"] in actions
    assert {"button", "evdev"} <= set(host_init.MODULES)


# ------------------------------------------------------------------ the guest agent and what it runs
SHADOW = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def chpasswd(tmp_path: Path, lines: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The guest's /usr/sbin/chpasswd run with busybox sh on ``tmp_path/shadow``, as qemu-ga runs it."""
    shadow = tmp_path / "shadow"
    if not shadow.exists():
        shadow.write_text(SHADOW)
    return subprocess.run([str(BUSYBOX), "sh", str(SCRIPTS / "chpasswd"), *args], input=lines, capture_output=True,
                          text=True, timeout=20, check=False,
                          env={"DPUSTACK_LIB": str(SCRIPTS / "lib.sh"), "DPUSTACK_SHADOW": str(shadow),
                               "DPUSTACK_CONSOLE": str(tmp_path / "console"), "DPUSTACK_RUN": str(tmp_path)})


def shadow_hash(tmp_path: Path, user: str) -> str:
    return next(line.split(":")[1] for line in (tmp_path / "shadow").read_text().splitlines()
                if line.startswith(user + ":"))


def hash_matches(hash_: str, password: str) -> bool:
    """Whether busybox's crypt gives ``hash_`` for ``password`` with ``hash_``'s salt (as login checks it)."""
    salt = hash_.split("$")[2]
    done = subprocess.run([str(BUSYBOX), "mkpasswd", "-m", "sha512", "-S", salt, "-P", "0"], input=password + "\n",
                          capture_output=True, text=True, check=True, timeout=10)
    return done.stdout.strip() == hash_


def test_chpasswd_hashes_each_users_password_into_shadow_as_qemu_ga_asks(tmp_path):
    password = 'n3w:pa$$ "w0rd" |& \\ ok'  # qemu-ga writes "user:password\n"; the first colon splits them
    done = chpasswd(tmp_path, f"root:{password}\n")

    assert done.returncode == 0, done.stderr
    root = shadow_hash(tmp_path, "root")
    assert root.startswith("$6$") and hash_matches(root, password) and not hash_matches(root, password[:-1])
    assert (tmp_path / "shadow").read_text().splitlines()[0] == f"root:{root}:19000:0:99999:7:::"
    assert shadow_hash(tmp_path, "daemon") == "*"
    assert host_init.step_lines((tmp_path / "console").read_text()) == [
        {"step": "password", "set": 1, "user": "root", "by": "chpasswd"}]


def test_chpasswd_with_e_takes_a_crypt_hash_as_it_is_and_refuses_what_is_none(tmp_path):
    hash_ = "$6$saltsalt$" + "A1./" * 21 + "xy"
    assert chpasswd(tmp_path, f"daemon:{hash_}", "-e").returncode == 0  # no newline at the end: still read
    assert shadow_hash(tmp_path, "daemon") == hash_

    done = chpasswd(tmp_path, "root:$6$x$a:b|c\n", "-e")
    assert done.returncode == 1 and "not a password hash for root" in done.stderr
    assert shadow_hash(tmp_path, "root") == "*"


def test_chpasswd_refuses_an_unknown_user_or_a_bad_line_and_applies_the_others(tmp_path):
    done = chpasswd(tmp_path, "nobody:x\nno colon here\nroot:fine\n")

    assert done.returncode == 1
    assert "no user nobody in" in done.stderr and "a line is not user:password" in done.stderr
    assert hash_matches(shadow_hash(tmp_path, "root"), "fine")
    assert "nobody" not in (tmp_path / "shadow").read_text()
    assert chpasswd(tmp_path, "", "--no-such-option").returncode == 2


@pytest.mark.parametrize("args, action", [(["-h", "-P", "+0", "hypervisor initiated shutdown"], "poweroff"),  # 7.2's
                                          (["-h", "-H", "+0", "hypervisor initiated shutdown"], "halt"),
                                          (["-h", "-r", "+0", "hypervisor initiated shutdown"], "reboot"),
                                          (["-P", "+0", "hypervisor initiated shutdown"], "poweroff"),
                                          (["-r", "now"], "reboot"), (["-h"], "poweroff")])
def test_sbin_shutdown_does_what_qemu_ga_asks_through_busybox_init(args, action):
    done = subprocess.run([str(BUSYBOX), "sh", str(SCRIPTS / "shutdown-command"), *args], capture_output=True,
                          text=True, timeout=10, check=False, env={"DPUSTACK_SHUTDOWN_RUNNER": "echo"})
    assert (done.returncode, done.stdout) == (0, action + "\n"), done.stderr


@pytest.mark.parametrize("args", [[], ["+0"], ["-k", "+0"], ["-P", "+5"]])
def test_sbin_shutdown_refuses_what_it_cannot_do(args):
    done = subprocess.run([str(BUSYBOX), "sh", str(SCRIPTS / "shutdown-command"), *args], capture_output=True,
                          text=True, timeout=10, check=False, env={"DPUSTACK_SHUTDOWN_RUNNER": "echo"})
    assert done.returncode == 2 and done.stdout == ""


@dataclass
class Machine:
    """A made-up /sys and /dev for the guest-agent script, a stand-in qemu-ga that says how it was run."""

    root: Path

    def __post_init__(self) -> None:
        for directory in ("sys/class/virtio-ports", "dev", "run"):
            (self.root / directory).mkdir(parents=True, exist_ok=True)

    def controller(self) -> None:
        (self.root / "sys/bus/virtio/drivers/virtio_console/virtio3").mkdir(parents=True)

    def port(self, device: str, name: str) -> None:
        (self.root / f"sys/class/virtio-ports/{device}").mkdir(parents=True, exist_ok=True)
        (self.root / f"sys/class/virtio-ports/{device}/name").write_text(name + "\n")
        (self.root / "dev" / device).write_text("")  # devtmpfs's node

    def start(self) -> subprocess.Popen[str]:
        fake = self.root / "qemu-ga"
        fake.write_text('#!/bin/sh\n[ "$1" = -V ] && { echo "QEMU Guest Agent 7.2.22"; exit 0; }\n'
                        'echo "$@" > "${0%/*}/ran"\n')
        fake.chmod(0o755)
        return subprocess.Popen([str(BUSYBOX), "sh", str(SCRIPTS / "guest-agent")], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={"DPUSTACK_SYS": str(self.root / "sys"), "DPUSTACK_DEV": str(self.root / "dev"),
                                     "DPUSTACK_QEMU_GA": str(fake), "DPUSTACK_QEMU_GA_LOG": str(self.root / "log/ga"),
                                     "DPUSTACK_RUN": str(self.root / "run"),
                                     "DPUSTACK_CONSOLE": str(self.root / "console")})

    def steps(self) -> list[dict]:
        console = self.root / "console"
        return host_init.step_lines(console.read_text()) if console.exists() else []


def test_the_guest_agent_starts_on_the_port_named_for_it(tmp_path):
    machine = Machine(tmp_path)
    machine.controller()
    machine.port("vport1p1", "org.qemu.guest_agent.0")
    machine.port("vport1p2", "other.port")

    done = machine.start()
    output, _ = done.communicate(timeout=20)

    port = tmp_path / "dev/virtio-ports/org.qemu.guest_agent.0"
    assert done.returncode == 0, output
    assert os.readlink(port) == "../vport1p1" and os.readlink(tmp_path / "dev/virtio-ports/other.port") == "../vport1p2"
    assert (tmp_path / "ran").read_text().split() == ["-m", "virtio-serial", "-p", str(port), "-t",
                                                     str(tmp_path / "run/guest-agent"), "-l", str(tmp_path / "log/ga")]
    assert machine.steps() == [{"step": "guest-agent", "port": str(port), "device": str(tmp_path / "dev/vport1p1"),
                                "version": "7.2.22"}]


def test_the_guest_agent_waits_for_its_port_to_come_after_the_controller(tmp_path):
    machine = Machine(tmp_path)
    machine.controller()
    started = machine.start()
    time.sleep(0.5)
    machine.port("vport2p1", "org.qemu.guest_agent.0")  # the hypervisor adds ports once the driver is ready

    output, _ = started.communicate(timeout=20)

    assert started.returncode == 0 and (tmp_path / "ran").exists(), output
    assert [step["step"] for step in machine.steps()] == ["guest-agent"]


@pytest.mark.parametrize("controller", [False, True])
def test_without_the_port_nothing_starts_and_init_does_not_respawn_in_a_loop(tmp_path, controller):
    machine = Machine(tmp_path)
    if controller:  # a virtio-serial controller with other ports only: given up after 5 s
        machine.controller()
        machine.port("vport1p1", "other.port")
    started = machine.start()
    try:
        time.sleep(6.0 if controller else 1.0)
        assert started.poll() is None  # waiting for ever (the exec'd sleep), not ended for init to respawn
        assert machine.steps() == [] and not (tmp_path / "ran").exists()
    finally:
        os.kill(started.pid, signal.SIGKILL)
        started.wait(5)


def test_init_respawns_the_guest_agent_and_loads_virtio_serial():
    inittab = host_init.guest_files()["etc/inittab"].decode().splitlines()
    assert "::respawn:/etc/dpustack/guest-agent" in inittab
    assert "virtio_console" in host_init.MODULES
    assert {"usr/sbin/chpasswd", "sbin/shutdown"} <= set(host_init.guest_scripts())  # where qemu-ga runs them
