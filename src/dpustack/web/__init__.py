"""What the controller's and the agent's HTTP apps share: their error answers and OpenAPI error
documentation (`http_errors`), and the refusal of NUL characters in any input (`nul_characters`).

Only the web layers (`dpustack.api`, `dpustack.agent.app` and its routes) import this package:
`dpustack.errors`, `pci/` and `drivers/` load no web framework.
"""
