"""Pure PCI logic shared by the agent and the controller.

Nothing here touches the file system, the network or a database: discovery
drivers feed it bytes and strings, and the controller feeds it rows.

Modules:
  address   PCI addresses (domain:bus:slot.function, domains wider than 16 bits)
  vpd       the PCI Vital Product Data format: card serial numbers
  devlink   `devlink -j port show` output: port flavours, pfnum/vfnum, representors
  device    PciDevice, the one record of a discovered function
  specs     device filters (`pci_information`, and the older whitelist form)
  spec_values  a filter's values key by key: Nova's address forms, hex ids, what can never match
  reachable  whether a regular expression can match any address or id at all
  pools     grouping devices by `pci_flavor_attrs`
  flavors   PCI flavor specs and matching, and what a request may take
  requests  `pci_passthrough:pci_flavor` grammar and PCI requests
  claims    choosing devices for an instance's requests
"""
