"""Print vlpeft's requirements from pyproject.toml, one a line: project.dependencies plus the named extras.

    python scripts/requirements.py [--without NAME ...] [EXTRA ...]

scripts/setup uses it (`--without torch dev`) to install the dependencies around a torch the user
installed first, so pyproject.toml stays the only list of them.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement, normalised (PEP 503): 'Foo_Bar[x]>=1' -> 'foo-bar'."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if name is None:
        raise SystemExit(f"pyproject.toml: cannot read the requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", name.group(1)).lower()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("extras", nargs="*", help="optional-dependency groups to add (e.g. dev)")
    p.add_argument("--without", action="append", default=[], help="leave this distribution out (repeatable)")
    args = p.parse_args()
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    groups = project.get("optional-dependencies", {})
    unknown = [e for e in args.extras if e not in groups]
    if unknown:
        raise SystemExit(f"pyproject.toml: no extra {', '.join(unknown)} (extras: {', '.join(groups)})")
    without = {requirement_name(n) for n in args.without}
    seen: list[str] = []
    for requirement in project["dependencies"] + [r for e in args.extras for r in groups[e]]:
        if requirement_name(requirement) not in without and requirement not in seen:
            seen.append(requirement)
    print("\n".join(seen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
