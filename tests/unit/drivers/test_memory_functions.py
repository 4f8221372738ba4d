"""The memory snic controller: idempotent create/delete, BDFs and representors derived from the slot."""

import pytest

from dpustack.drivers.functions import FunctionSpec, host_bdf, representor_name
from dpustack.drivers.functions.memory import MemoryFunctionDriver
from dpustack.errors import DriverError


def test_a_net_pf_gets_a_bluefield_representor_and_a_host_bdf_from_its_slot():
    driver = MemoryFunctionDriver()

    function = driver.create(FunctionSpec("net-p1", slot=3, mac="aa:bb:cc:dd:ee:01", features=("tso",)))

    assert function.bdf == "0000:44:00.0"
    assert function.representor == "pf3hpf"
    assert (function.type, function.kind, function.mac, function.features) == ("PF", "net", "aa:bb:cc:dd:ee:01",
                                                                              ("tso",))
    assert driver.get("net-p1") == function


def test_storage_functions_and_vfs_have_distinct_representors():
    assert representor_name(3, "PF", "storage") == "snap3"
    assert representor_name(3, "VF", "net") == "pf0vf3"
    assert representor_name(3, "PF", "net") == "pf3hpf"
    assert host_bdf(3) == "0000:44:00.0"
    assert host_bdf(190) == "0000:ff:00.0"


def test_a_slot_beyond_the_host_buses_is_refused():
    with pytest.raises(DriverError, match="outside"):
        host_bdf(191)


def test_a_recreated_function_comes_back_at_the_same_bdf():
    spec = FunctionSpec("net-p1", slot=5, mac="aa:bb:cc:dd:ee:01")
    before = MemoryFunctionDriver().create(spec)

    after = MemoryFunctionDriver().create(spec)  # a fresh driver: the SoC rebooted

    assert (after.bdf, after.representor) == (before.bdf, before.representor)


def test_creating_an_existing_function_returns_it_unless_may_exist_is_false():
    driver = MemoryFunctionDriver()
    spec = FunctionSpec("f1", slot=1, mac="aa:bb:cc:dd:ee:01")
    first = driver.create(spec)

    assert driver.create(spec) == first
    assert len(driver.list()) == 1
    with pytest.raises(DriverError, match="already exists"):
        driver.create(spec, may_exist=False)


def test_creating_an_existing_id_with_other_settings_is_an_error():
    driver = MemoryFunctionDriver()
    driver.create(FunctionSpec("f1", slot=1, mac="aa:bb:cc:dd:ee:01"))

    with pytest.raises(DriverError, match="different"):
        driver.create(FunctionSpec("f1", slot=1, mac="aa:bb:cc:dd:ee:02"))


def test_two_functions_cannot_share_a_slot():
    driver = MemoryFunctionDriver()
    driver.create(FunctionSpec("f1", slot=1))

    with pytest.raises(DriverError, match="slot 1 is taken by function 'f1'"):
        driver.create(FunctionSpec("f2", slot=1))


def test_deleting_a_missing_function_is_fine_unless_if_exists_is_false():
    driver = MemoryFunctionDriver()
    driver.create(FunctionSpec("f1", slot=1))

    driver.delete("f1")
    driver.delete("f1")

    assert driver.get("f1") is None
    with pytest.raises(DriverError, match="does not exist"):
        driver.delete("f1", if_exists=False)


def test_list_shows_functions_in_slot_order():
    driver = MemoryFunctionDriver()
    driver.create(FunctionSpec("b", slot=2))
    driver.create(FunctionSpec("a", slot=1))

    assert [f.id for f in driver.list()] == ["a", "b"]
