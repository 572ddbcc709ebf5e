#!/usr/bin/env python3
"""Builds dynamcp's default catalog: the shared merged catalog with the researched facts of
`catalog/server-facts.json` applied to the records they name.

    python3 scripts/apply-server-facts.py SHARED_CATALOG.json.gz catalog/server-facts.json catalog/mcp_catalog.json.gz

The facts say, per server, which environment variables the server itself reads (from its README
and source), what each is (secret, setting, optional, file), and the steps that produce it. For
each record named with high or medium confidence:
- a variable the facts describe replaces the record's own entry of that name, or is added when it
  is required (a secret, a setting or a file); optional variables only correct an entry the
  record already declares, so records stay as short as the catalog had them;
- of `one_of` (alternative groups of variables, one of which the server needs), the first
  group's variables are required, unless they have a default (a switch such as OAUTH_ENABLED
  is not a value the user supplies); their description names the other groups;
- a variable the facts list under `not_read` is removed (the catalog gave the server another
  server's variables);
- everything else in the record is left as it was.
Every record that launches the same package (or URL) as the named one gets the same facts: the
catalog lists some servers once per registry.
The output is written deterministically (gzip without a timestamp), so it changes only when its
inputs do.
"""
import gzip
import json
import sys

USED = {"high", "medium"}


def credential(name, fact):
    kind = fact.get("kind")
    required = kind in ("secret", "setting", "file") and bool(fact.get("required", True))
    entry = {
        "name": name,
        "description": (fact.get("description") or "").strip(),
        "required": required,
        "secret": kind in ("secret", "file"),
        "secret_basis": "source",
        "sources": ["server-facts"],
    }
    if kind == "file":
        entry["kind"] = "file"
    steps = [s.strip() for s in fact.get("steps") or [] if s and s.strip()]
    if steps:
        entry["instructions"] = steps
    return entry


def with_one_of(facts):
    """The facts' variables, with the first `one_of` group's required (see the module doc)."""
    env = {name: dict(fact) for name, fact in (facts.get("env") or {}).items()}
    groups = facts.get("one_of") or []
    if not groups:
        return env
    others = "; ".join(" + ".join(g) for g in groups[1:])
    for name in groups[0]:
        fact = env[name]
        if fact.get("default") is not None:
            continue
        fact["required"] = True
        if fact.get("kind") not in ("secret", "setting", "file"):
            fact["kind"] = "setting"
        if others:
            fact["description"] = (fact.get("description") or "").rstrip() + f" (Or instead: {others}.)"
    return env


def apply(record, facts):
    changed = []
    creds = record.get("credentials") or []
    dropped = set(facts.get("not_read") or [])
    kept = [c for c in creds if c["name"] not in dropped]
    if len(kept) != len(creds):
        changed.append(f"dropped {sorted(dropped & {c['name'] for c in creds})}")
    by_name = {c["name"]: i for i, c in enumerate(kept)}
    for name, fact in with_one_of(facts).items():
        new = credential(name, fact)
        if name in by_name:
            kept[by_name[name]] = new
            changed.append(f"corrected {name}")
        elif new["required"]:
            kept.append(new)
            by_name[name] = len(kept) - 1
            changed.append(f"added {name}")
    record["credentials"] = kept
    return changed


def launchability(option):
    """As dynamcp ranks a launch option (`LaunchOption::launchability`): 0 cannot run."""
    spec = option.get("url") if option["kind"] == "remote" else option.get("command")
    if option["kind"] == "source" or not spec:
        return 0
    registry = option.get("registry")
    if registry is not None:
        if registry.get("mcp_package") is False:
            return 0
        if registry.get("listed"):
            return 4
        return 0 if option["kind"] == "pypi" else 1
    return 3 if option.get("verified") else 2


def launch_key(record):
    """What a record runs (`ServerRecord::launch_key`): records with one key are one server."""
    options = record.get("launch") or []
    best = max((launchability(o) for o in options), default=0)
    if best == 0:
        return None
    option = next(o for o in options if launchability(o) == best)
    if option["kind"] == "remote":
        return "remote:" + (option.get("url") or "").rstrip("/").lower()
    if option["kind"] in ("npm", "pypi", "docker") and option.get("package"):
        return option["kind"] + ":" + option["package"].lower()
    return None


def main():
    source, facts_path, out = sys.argv[1:4]
    catalog = json.load(gzip.open(source))
    facts = json.load(open(facts_path))["servers"]
    by_id = {s["id"]: s for s in catalog["servers"]}
    for sid, fact in sorted(facts.items()):
        if fact.get("confidence") not in USED:
            print(f"{sid}: skipped ({fact.get('confidence')} confidence)")
            continue
        record = by_id.get(sid)
        if record is None:
            print(f"{sid}: not in the catalog", file=sys.stderr)
            sys.exit(1)
        # The same package listed by another registry is the same server.
        key = launch_key(record)
        same = [r for r in catalog["servers"] if r is record or (key and launch_key(r) == key)]
        for r in same:
            changed = apply(r, fact)
            print(f"{r['id']}{'' if r is record else f' (as {sid})'}: {'; '.join(changed) or 'unchanged'}")
    catalog.setdefault("facts", {})["server_facts"] = (
        "credentials of the servers named in catalog/server-facts.json were corrected from each "
        "server's own README and source (sources: [\"server-facts\"])"
    )
    raw = json.dumps(catalog, separators=(",", ":"), ensure_ascii=False).encode()
    with open(out, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as z:
            z.write(raw)


if __name__ == "__main__":
    main()
