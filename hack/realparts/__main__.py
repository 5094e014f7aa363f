"""``python -m hack.realparts [NAME...]``: build (or find cached) real parts and print their paths."""

from __future__ import annotations

import argparse

from hack.realparts.build import PARTS, binary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hack.realparts", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(PARTS)} (default: all)")
    names = parser.parse_args().names or list(PARTS)
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    for name in names:
        print(f"{name} {PARTS[name].version} {binary(name)}", flush=True)


if __name__ == "__main__":
    main()
