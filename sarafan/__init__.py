"""The operator tools: the `sarafan` command, the embedded stack (`sarafan up`), the ops
commands, the demo, the NATS permission table and the README's event catalogue.

They stand on the runtime kernel (`shared/`) and may import the services; neither the kernel
nor a service imports them (tests/unit/test_layers.py).
"""
