"""What the test metadata service tells the lab host booted from the host image."""

ADMIN_PASS = 'Lab pa$$ "w0rd" |&'
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDpustackLabHostImageTestKey0000000000000 lab@test"
METADATA = {
    "uuid": "0b5c2f3e-7d41-4a36-9a57-2f1f0c8e4d21",
    "hostname": "lab-host-1.novalocal",
    "name": "lab-host-1",
    "admin_pass": ADMIN_PASS,
    "public_keys": {"lab-key": PUBLIC_KEY},
    "availability_zone": "lab",
    "meta": {"role": "test", "unicode": "h\u00e9llo"},
}
USER_DATA = b"#!/bin/sh\necho ran > /root/user-data-ran\necho USER-DATA-MARKER-$((6 * 7))\n"
