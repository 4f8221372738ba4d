"""The fault injector lets a test make "the next call to X" fail, before or after it takes effect."""

import pytest

from dpustack.drivers.functions import FunctionSpec
from dpustack.drivers.functions.memory import MemoryFunctionDriver
from dpustack.errors import DriverError


def test_an_armed_fault_fails_the_next_call_with_a_readable_message_and_then_disarms():
    driver = MemoryFunctionDriver()
    driver.faults.arm("create")

    with pytest.raises(DriverError, match=r"^functions\.create: injected fault$"):
        driver.create(FunctionSpec("f1", slot=1))

    assert driver.list() == []
    assert driver.create(FunctionSpec("f1", slot=1)).id == "f1"


def test_skip_lets_earlier_calls_through_and_fails_a_later_one():
    driver = MemoryFunctionDriver()
    driver.faults.arm("create", skip=1, message="card on fire")

    driver.create(FunctionSpec("f1", slot=1))
    with pytest.raises(DriverError, match="card on fire"):
        driver.create(FunctionSpec("f2", slot=2))

    assert [f.id for f in driver.list()] == ["f1"]


def test_a_fault_after_the_effect_leaves_a_half_done_call_behind():
    driver = MemoryFunctionDriver()
    driver.faults.arm("create", after=True)

    with pytest.raises(DriverError):
        driver.create(FunctionSpec("f1", slot=1))

    assert [f.id for f in driver.list()] == ["f1"]


def test_faults_only_hit_the_operation_they_were_armed_for():
    driver = MemoryFunctionDriver()
    driver.faults.arm("delete")

    driver.create(FunctionSpec("f1", slot=1))
    assert driver.get("f1") is not None
    assert driver.faults.armed == 1


def test_every_guarded_call_is_recorded_in_order_and_clear_forgets_them():
    driver = MemoryFunctionDriver()
    driver.create(FunctionSpec("f1", slot=1))
    driver.get("f1")
    driver.delete("f1")
    assert driver.faults.calls == ["create", "get", "delete"]

    driver.faults.arm("list")
    driver.faults.clear()
    assert driver.faults.calls == [] and driver.faults.armed == 0
    assert driver.list() == []
