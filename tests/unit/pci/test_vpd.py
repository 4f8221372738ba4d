"""VPD: the card serial number, and a clean error (never a crash) for anything that is not valid VPD."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from dpustack.pci.vpd import encode_vpd, parse_vpd

VALID = encode_vpd("BlueField-2 DPU 25GbE Dual-Port SFP56",
                   {"PN": "MBF2H332A-AEEOT", "EC": "B1", "SN": "MT2146X01234", "V0": "PCIeGen4 x8"},
                   {"RW": "\x00" * 12})


def test_a_valid_vpd_gives_the_product_name_and_serial():
    vpd = parse_vpd(VALID)

    assert vpd.error == ""
    assert vpd.name == "BlueField-2 DPU 25GbE Dual-Port SFP56"
    assert vpd.serial == "MT2146X01234"
    assert vpd.fields["PN"] == "MBF2H332A-AEEOT"


def test_the_rv_checksum_makes_every_byte_through_it_sum_to_zero():
    rv = VALID.index(b"RV")

    assert sum(VALID[:rv + 4]) % 256 == 0


def test_bytes_after_the_end_tag_are_ignored_as_the_kernel_pads_the_file():
    assert parse_vpd(VALID + b"\xff" * 64).serial == "MT2146X01234"


def test_a_truncated_vpd_is_an_error_without_a_serial():
    for cut in (1, 5, 40, len(VALID) - 1):
        vpd = parse_vpd(VALID[:cut])
        assert vpd.error.startswith("VPD error: truncated"), (cut, vpd.error)
        assert vpd.serial == ""


def test_a_flipped_byte_fails_the_checksum_and_the_serial_is_not_trusted():
    corrupt = bytearray(VALID)
    corrupt[VALID.index(b"MT2146X") + 3] ^= 0x01

    vpd = parse_vpd(bytes(corrupt))

    assert "bad RV checksum" in vpd.error
    assert vpd.serial == ""


def test_a_vpd_r_without_rv_is_an_error():
    body = b"SN\x04ABCD"
    data = b"\x82\x01\x00X" + b"\x90" + bytes([len(body), 0]) + body + b"\x78"

    assert parse_vpd(data).error == "VPD error: the VPD-R section has no RV checksum"


def test_an_empty_or_unprogrammed_vpd_is_an_error():
    assert parse_vpd(b"").error == "VPD error: the VPD is empty"
    assert parse_vpd(b"\xff" * 256).error == "VPD error: unexpected resource tag 0xff at byte 0"


def test_a_keyword_longer_than_its_section_is_an_error():
    data = b"\x90\x05\x00SN\x09ABCDEFGHI\x78"

    assert "overruns the VPD-R" in parse_vpd(data).error


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_only_report_a_vpd_error(data):
    vpd = parse_vpd(data)

    assert vpd.error == "" or (vpd.error.startswith("VPD error: ") and vpd.fields == {})


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(min_value=1, max_value=255))
def test_a_corrupted_byte_never_yields_a_wrong_serial(position, flip):
    corrupt = bytearray(VALID)
    corrupt[position] ^= flip

    assert parse_vpd(bytes(corrupt)).serial in ("MT2146X01234", "")
