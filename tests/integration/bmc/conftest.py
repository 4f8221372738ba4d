"""The BMC emulators on a real lab host: ``host_image``, ``libvirt_cache`` and ``timings`` are session
fixtures of tests/conftest.py, shared with the other modules that boot a host."""
