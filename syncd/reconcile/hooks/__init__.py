"""After a sync: restart the Domino endpoint, POST a signed webhook, run a command.

Each hook of a target runs once per pointer move that puts a version in place for serving
(a new version, a promoted pre-staged one, a rollback to a kept folder), after the folder is
published and verified; never for a heal, a repair, a no-op or a restart. A failing hook is
retried with jittered backoff and then reported, and never touches the folder.

One `Hook` per kind (`webhook.py`, `command.py`, `domino_restart.py`), made from its settings by
`kinds.py`; a new kind (a KServe InferenceService restart, say) is one class there and one
settings model.
"""

from syncd.reconcile.hooks.command import COMMAND_BASE_ENV, command_environment
from syncd.reconcile.hooks.event import Hook, HookEvent, HookResult
from syncd.reconcile.hooks.runner import HookRunner
from syncd.reconcile.hooks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

__all__ = [
    "COMMAND_BASE_ENV",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Hook",
    "HookEvent",
    "HookResult",
    "HookRunner",
    "command_environment",
    "signature",
]
