"""A namespace deleted and made again under the same name is told apart from the old one (root)."""

from __future__ import annotations

import os

from dpustack.linux import netns


def test_every_re_creation_of_a_namespace_has_a_new_identity():
    name = f"dps-ident-{os.getpid()}"
    seen = []
    try:
        for _ in range(30):  # the kernel reuses a freed namespace's inode number at once: that cannot tell them apart
            netns.create(name)
            seen.append(netns.identity(name))
            netns.delete(name)
    finally:
        if netns.exists(name):
            netns.delete(name)
    assert len(set(seen)) == len(seen)
