"""Pure logic, no I/O: run ids and safe keys, resolution rules, checksums, plans, retention."""
