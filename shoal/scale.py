"""How many instances of each scalable role a local cluster runs (`shoal up --scale`, `shoal scale`): the
arguments, the scale file the supervisor reads (DATA_DIR/scale.json), and the names of the extra instances."""

from __future__ import annotations

import json
from pathlib import Path

#: the number of instances wanted per scalable role (`shoal up --scale`, `shoal scale`): {"dispatcher": 3}
SCALE_FILE = "scale.json"
#: the roles a local cluster runs more instances of on request: the leader-only ones (one active, the others
#: standby on their lease), and the dispatcher and gateway (every instance serves)
SCALABLE = ("gateway", "dispatcher", "orchestrator", "allocator", "scheduler")
MAX_INSTANCES = 9


class ScaleError(ValueError):
    """A scale request that cannot be carried out; the message says what to fix."""


def parse_scale(items: list[str]) -> dict[str, int]:
    """`["dispatcher=3", "gateway=2"]` -> {"dispatcher": 3, "gateway": 2}, or ScaleError saying what is wrong."""
    out: dict[str, int] = {}
    for item in items:
        role, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise ScaleError(f"scale: {item!r} is not ROLE=N (for example dispatcher=3)")
        if role not in SCALABLE:
            raise ScaleError(f"scale: {role!r} cannot be scaled; roles are {', '.join(SCALABLE)}")
        n = int(count)
        if not 1 <= n <= MAX_INSTANCES:
            raise ScaleError(f"scale: {role}={n}: a role runs 1 to {MAX_INSTANCES} instances")
        out[role] = n
    return out


def read_scale(data_dir: Path) -> dict[str, int]:
    try:
        raw = json.loads((data_dir / SCALE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {r: int(n) for r, n in raw.items() if r in SCALABLE and isinstance(n, int) and 1 <= n <= MAX_INSTANCES}


def write_scale(data_dir: Path, scale: dict[str, int]) -> None:
    tmp = data_dir / (SCALE_FILE + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(scale.items()))))
    tmp.replace(data_dir / SCALE_FILE)


def extra_names(scale: dict[str, int]) -> list[str]:
    """The extra instances `scale` asks for, beyond each role's first: dispatcher-2, dispatcher-3, ..."""
    return [f"{role}-{k}" for role in SCALABLE for k in range(2, scale.get(role, 1) + 1)]


def role_of(name: str) -> str:
    return name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() and name.rsplit("-", 1)[0] in SCALABLE \
        else name
