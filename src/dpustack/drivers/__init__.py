"""Hardware driver interfaces, Ironic style.

One small abstract class per hardware concern, each in its own package with
its dataclasses; one module per implementation; implementations are found by
name through entry points (see :mod:`dpustack.drivers.registry`) and declares
the agent.toml options it takes (:mod:`dpustack.drivers.options`)::

    functions/  FunctionDriver   snic controller: hot-plugged PFs/VFs
    switch/     SwitchDriver     the DPU's Open vSwitch
    storage/    StorageDriver    volumes bound to storage functions
    bmc/        BmcDriver        the host's power, hardware info, console
    inventory/  InventoryDriver  PCI functions (VPD serials, SR-IOV), devlink ports
    hypervisor/ HypervisorDriver a VM node's host hypervisor: its NUMA cells, CPUs, memory

Every operation is idempotent (``may_exist`` on create/add/attach,
``if_exists`` on delete/del/detach) and raises
:class:`dpustack.errors.DriverError` on failure.
"""
