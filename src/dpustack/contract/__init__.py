"""The messages between the controller and a node's agent, defined once for both sides.

The agent's API validates its request bodies and answers with these models;
the controller's `AgentClient` builds its requests from them and reads the
answers back into them; the controller's ``POST /v1/nodes/report`` validates
the node report the agent's reporter builds from them. Each rule (names,
MAC addresses, id patterns, limits) is written once, here or in
`dpustack.inputs`.

* `fields`: the value types the messages share (ids, packet rates).
* `instances`: building an instance, its NICs and volumes, power, console, step logs.
* `node`: the node report with its PCI parts, the status, the credentials rotation.
* `switch`: a plugged port's packet-rate limit.

A model's docstring is its description in both APIs' OpenAPI documents, so
what a reader of the code needs beyond it is in a comment above the class.
"""
