"""The controller: desired state vs actual state, a key queue, and the sync of one folder."""
