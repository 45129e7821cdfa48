#!/usr/bin/env python3
"""Checks the minimum Rust versions the README states against the dependencies.

For each feature set of the facade, the newest `rust-version` that any crate in its build
declares must equal the version the README's table states for it (a dependency that needs a
newer Rust raises our minimum; one that needs less lets us say less). The crates' own
`rust-version` fields must be at least that too. This checks the floor the dependencies set; the
machine has no older toolchain to build with, so it does not build with that version.
"""
import json
import re
import subprocess
import sys

# The README's table, as `features -> version` (kept in one place: the README itself).
readme = open("README.md", encoding="utf-8").read()
table = dict(re.findall(r"^\| `([^`]*)` \| (1\.\d+) \|", readme, re.M))
if not table:
    sys.exit("msrv: the README has no minimum Rust version table")

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--all-features"], text=True))
# The dependencies' declarations; the workspace's own crates are what is being checked.
rust_version = {
    (p["name"], p["version"]): p.get("rust_version")
    for p in meta["packages"]
    if p["source"] is not None
}


def key(version):
    parts = [int(x) for x in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def floor(features):
    args = ["cargo", "tree", "-p", "stockroom", "-e", "normal", "--prefix", "none",
            "-f", "{p}", "--no-default-features"]
    if features:
        args += ["--features", features]
    newest, by = "1.0", "-"
    for line in subprocess.check_output(args, text=True).splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, version = parts[0], parts[1].lstrip("v")
        declared = rust_version.get((name, version))
        if declared and key(declared) > key(newest):
            newest, by = declared, f"{name} {version}"
    return newest, by


failed = False
for features, stated in table.items():
    newest, by = floor("memory,sqlite" if features == "default" else features)
    ok = key(newest) == key(stated)
    failed |= not ok
    print(f"{'ok  ' if ok else 'FAIL'} {features:<24} README says {stated}, dependencies need {newest} ({by})")

own = {p["name"]: p.get("rust_version") for p in meta["packages"] if p["source"] is None}
for features, stated in table.items():
    needed = (
        "stockroom-postgres" if "postgres" in features
        else "stockroom-mariadb" if "mariadb" in features
        else "stockroom"
    )
    if key(own[needed]) < key(stated):
        failed = True
        print(f"FAIL {needed} declares rust-version {own[needed]}, below {stated} ({features})")
sys.exit(1 if failed else 0)
