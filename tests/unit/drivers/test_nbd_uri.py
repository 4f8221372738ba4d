"""NBD URIs of volumes: what the qsd driver accepts, the QMP address it makes, and the URI read back."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from dpustack.drivers.storage.nbd_uri import NbdAddress, address_of_node, parse_nbd_uri


@pytest.mark.parametrize("uri, address, canonical", [
    ("nbd://10.0.0.5:10809/vol-1", NbdAddress("vol-1", host="10.0.0.5", port=10809), "nbd://10.0.0.5:10809/vol-1"),
    ("nbd://storage-1.lab/vol-1", NbdAddress("vol-1", host="storage-1.lab", port=10809),
     "nbd://storage-1.lab:10809/vol-1"),
    ("nbd+tcp://10.0.0.5:2000/attach:vol-1.a", NbdAddress("attach:vol-1.a", host="10.0.0.5", port=2000),
     "nbd://10.0.0.5:2000/attach:vol-1.a"),
    ("nbd://[fd00::5]:10809/pool/vol-1", NbdAddress("pool/vol-1", host="fd00::5", port=10809),
     "nbd://[fd00::5]:10809/pool/vol-1"),
    ("nbd://[FD00:0::5]/v", NbdAddress("v", host="fd00::5", port=10809), "nbd://[fd00::5]:10809/v"),
    ("nbd+unix:///vol-1?socket=/run/storage/nbd.sock", NbdAddress("vol-1", socket="/run/storage/nbd.sock"),
     "nbd+unix:///vol-1?socket=/run/storage/nbd.sock"),
])
def test_a_uri_gives_its_address_and_one_canonical_spelling(uri, address, canonical):
    assert parse_nbd_uri(uri) == address
    assert address.uri == canonical
    assert parse_nbd_uri(canonical) == address


def test_the_qmp_server_argument_is_a_socket_address():
    assert parse_nbd_uri("nbd://10.0.0.5/v").qmp_server() == {"type": "inet", "host": "10.0.0.5", "port": "10809"}
    assert parse_nbd_uri("nbd+unix:///v?socket=/run/n.sock").qmp_server() == {"type": "unix", "path": "/run/n.sock"}


@pytest.mark.parametrize("uri, reason", [
    ("10.0.0.5:10809/vol", "is not an NBD URI"),
    ("iscsi://10.0.0.5/vol", "unknown scheme 'iscsi'"),
    ("nbd://10.0.0.5:10809", "the export name must be"),
    ("nbd://10.0.0.5:10809/", "the export name must be"),
    ("nbd://10.0.0.5/vol%201", "the export name must be"),
    ("nbd://10.0.0.5/vol 1", "the export name must be"),
    ("nbd://10.0.0.5//vol", "not starting with /"),
    ("nbd://10.0.0.5:0/vol", "port '0' is not a number"),
    ("nbd://10.0.0.5:99999/vol", "port '99999'"),
    ("nbd://10.0.0.5:http/vol", "port 'http'"),
    ("nbd://bad_host/vol", "'bad_host' is not a host name"),
    ("nbd://[::g]/vol", "'::g' is not an IPv6 address"),
    ("nbd://10.0.0.5/vol?tls=on", "takes no query"),
    ("nbd+unix://host/vol?socket=/s", "has no host"),
    ("nbd+unix:///vol", "socket=PATH"),
    ("nbd+unix:///vol?socket=/s&x=1", "socket=PATH"),
    ("nbd+unix:///vol?socket=relative.sock", "absolute path"),
    ("nbd+unix:///vol?socket=/" + "s" * 107, "at most 107 bytes"),
])
def test_a_bad_uri_says_what_is_wrong(uri, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace("?", r"\?")):
        parse_nbd_uri(uri)


@pytest.mark.parametrize("filename, uri", [
    ("nbd://192.168.251.1:10809/vol-a", "nbd://192.168.251.1:10809/vol-a"),
    ("nbd://::1:10998/v6", "nbd://[::1]:10998/v6"),  # QEMU 7.2 writes an IPv6 host without brackets
    ("nbd+unix:///u1?socket=/tmp/nbd.sock", "nbd+unix:///u1?socket=/tmp/nbd.sock"),
])
def test_the_filename_qemu_reports_for_a_node_reads_back_as_the_canonical_uri(filename, uri):
    assert address_of_node(filename).uri == uri


@pytest.mark.parametrize("filename", ["/var/lib/images/vol.qcow2", 'json:{"driver": "nbd"}',
                                      "nbd://127.0.0.1:10999/vol 1/x?%"])
def test_a_filename_of_another_shape_has_no_address(filename):
    assert address_of_node(filename) is None


hosts = st.one_of(st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
                  st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z]{2,5})?", fullmatch=True))
exports = st.from_regex(r"[A-Za-z0-9._~:@+=,-][A-Za-z0-9._~:@+=,/-]{0,40}", fullmatch=True)


@given(host=hosts, port=st.integers(1, 65535), export=exports)
def test_every_accepted_tcp_uri_survives_the_round_trip_through_qemus_filename(host, port, export):
    address = parse_nbd_uri(f"nbd://{host}:{port}/{export}")
    bare = address.host  # how QEMU writes it: no brackets
    assert address_of_node(f"nbd://{bare}:{port}/{export}") == address
