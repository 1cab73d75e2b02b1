"""The dataset root on disk: layout, staging, manifests, atomic swap, lock, verify, watch."""
