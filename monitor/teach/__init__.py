"""Teach-in: commissioning a station's threshold from its own good welds while the daemon
runs (``{prefix}/cmd/teach``, ``weldmon teach``). `deploy.teach_rule` computes the
threshold (shared with `weldmon enroll --base`), `config` is the ``teach_in:`` section, `store`
keeps it in state_dir bound to the model, `station` is the per-station state machine and
the command handler the daemon wires in (docs/operations.md, "Commissioning a cell").
"""
