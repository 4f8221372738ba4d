"""The interface of a resource request: one kind of thing an instance needs from a node besides CPU and RAM.

PCI devices are the first kind (`resource_requests.pci`), a VM's NUMA cells
the second (`resource_requests.numa`); accelerators are meant to sit beside
them. The scheduler treats every kind
the same way: it lets each request of a demand read what it needs to know
about the candidate nodes once (`read_facts`), keeps a node only if every
request `fits` it, and `claim`s each request on the chosen node in the
scheduling transaction, after the node's CPU and RAM.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from dpustack.db.models import Node
from dpustack.errors import Conflict


class ClaimRace(Conflict):
    """A concurrent claim took a chosen resource first: roll the transaction back and schedule again."""


class ResourceRequest(abc.ABC):
    """What one instance asks of one kind of resource."""

    # The reason counted for a node that `fits` rejects, as the user reads it in a "no valid node" answer.
    rejection: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def of_instance(cls, session: Session, instance_id: str, params: dict[str, Any]) -> ResourceRequest | None:
        """The instance's request of this kind (from its rows and its create parameters); None if it asks none."""

    @abc.abstractmethod
    def read_facts(self, session: Session, node_ids: list[str]) -> Any:
        """What `fits` looks at for these nodes, read in one go."""

    @abc.abstractmethod
    def fits(self, node: Node, facts: Any) -> bool:
        """Whether `node` can meet the request, judged from `facts` (what `read_facts` returned)."""

    def why_not(self, node: Node, facts: Any) -> str | None:
        """Why `node` cannot meet the request, in more words than `rejection` (None: nothing to add)."""
        return None

    @abc.abstractmethod
    def claim(self, session: Session, node: Node, instance_id: str) -> None:
        """Take the resources on `node` for the instance, in the session's transaction.

        Raises ClaimRace if they are no longer free (a concurrent claim won).
        """

    @classmethod
    @abc.abstractmethod
    def release(cls, session: Session, instance_id: str) -> None:
        """Free whatever of this kind the instance holds; nothing held is fine."""
