"""A quantum network of nodes: description (network.yaml), emulator, node process, link sessions, launcher."""
