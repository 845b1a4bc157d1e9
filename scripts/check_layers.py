#!/usr/bin/env python3
"""Checks that the edge's source is layered: no import cycles, no oversized files.

Reads every edge/src/**/*.rs (the library crate; main.rs is the binary and imports
the library by name) and collects what each file refers to inside the crate:
`use crate::…`, `use self::…` and `use super::…` trees (grouped ones included:
`use crate::{a, b::{c, d}};`), inline `crate::x::…`, `self::x::…` and `super::x::…`
paths, and paths through a child module the file declares (`mod x;` … `x::f()`).
Comments and string literals are skipped. Each path is resolved to the file that
defines the module it names.

Two graphs are built from those references: between files, and between the crate's
top-level modules (lib.rs's `mod`s: a folder and its `x.rs` are one module). The check
fails (exit status 1) when either graph has a cycle — two modules that import each
other, directly or through others — printing each cycle, or when a file has more than
MAX_CODE_LINES lines of non-test code (the lines before its trailing `#[cfg(test)]`
modules). When everything passes it prints a one-line summary.

    python3 scripts/check_layers.py [--src edge/src] [--graph]
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_CODE_LINES = 400
PATH_ROOTS = ("crate", "self", "super")


def raw_string_start(text, i):
    """Whether the `r` at `i` starts a raw string (`r"…"`, `r#"…"#`, `br#"…"#`), not an
    identifier ending in `r`."""

    def ident(k):
        return k >= 0 and (text[k].isalnum() or text[k] == "_")

    if not ident(i - 1):
        return True
    return text[i - 1] == "b" and not ident(i - 2)


def strip(text):
    """The text with comments removed and string/char literals emptied, same length
    per line (newlines kept, so positions map to lines)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            while i < n and text[i] != "\n":
                out.append(" ")
                i += 1
        elif c == "/" and nxt == "*":
            depth = 0
            while i < n:
                if text.startswith("/*", i):
                    depth += 1
                    out.append("  ")
                    i += 2
                elif text.startswith("*/", i):
                    depth -= 1
                    out.append("  ")
                    i += 2
                    if depth == 0:
                        break
                else:
                    out.append("\n" if text[i] == "\n" else " ")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]) and raw_string_start(text, i):
            hashes = len(re.match(r"r(#*)", text[i:]).group(1))
            end = text.find('"' + "#" * hashes, i + 2 + hashes)
            end = n if end < 0 else end + 1 + hashes
            out.append("".join("\n" if ch == "\n" else " " for ch in text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            end = min(j + 1, n)
            out.append('"' + "".join("\n" if ch == "\n" else " " for ch in text[i + 1:end - 1]) + '"')
            i = end
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if nxt == "\\":
                end = text.find("'", i + 2)
                end = n if end < 0 else end + 1
                out.append(" " * (end - i))
                i = end
            elif i + 2 < n and text[i + 2] == "'":
                out.append("   ")
                i += 3
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` → [[a, b], [a, c, d], [a, c, e]] (segments; `self` in a
    group names the group's prefix; `as` renames and globs are dropped)."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def walk(prefix, text):
        parts, depth, start = [], 0, 0
        for k, ch in enumerate(text):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(text[start:k])
                start = k + 1
        parts.append(text[start:])
        for part in parts:
            if not part:
                continue
            brace = part.find("{")
            if brace >= 0 and part.endswith("}"):
                head = [s for s in part[:brace].split("::") if s]
                walk(prefix + head, part[brace + 1:-1])
                continue
            segs = [s for s in part.split("::") if s and s != "*"]
            if segs == ["self"]:
                segs = []
            paths.append(prefix + segs)

    walk([], tree)
    return paths


def module_path(src, file):
    """The module path of a source file: lib.rs → [], a/b.rs → [a, b], a/mod.rs → [a]."""
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts == ["lib"]:
        return []
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def inline_modules(stripped):
    """(start, end, name) of every inline `mod name { … }` in the stripped text."""
    spans = []
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", stripped):
        depth, k = 0, m.end() - 1
        while k < len(stripped):
            if stripped[k] == "{":
                depth += 1
            elif stripped[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        spans.append((m.start(), k, m.group(1)))
    return spans


def references(stripped, here, children):
    """Absolute module paths (segments) that the file at module path `here` refers to."""
    spans = inline_modules(stripped)

    def scope(pos):
        return here + [name for start, end, name in spans if start < pos < end]

    def absolute(segs, pos):
        base = scope(pos)
        if not segs:
            return None
        if segs[0] == "crate":
            return segs[1:]
        if segs[0] in ("self", "super"):
            k = 0
            while k < len(segs) and segs[k] in ("self", "super"):
                if segs[k] == "super":
                    if not base:
                        return None
                    base = base[:-1]
                k += 1
            return base + segs[k:]
        if segs[0] in children and pos_is_file_level(pos):
            return here + segs
        return None

    def pos_is_file_level(pos):
        return all(not (start < pos < end) for start, end, _ in spans)

    found = []
    uses = list(re.finditer(r"\buse\s+([^;]+);", stripped))
    for m in uses:
        for segs in expand_use_tree(m.group(1)):
            target = absolute(segs, m.start())
            if target is not None:
                found.append(target)
    in_use = [(m.start(), m.end()) for m in uses]
    names = "|".join(PATH_ROOTS + tuple(sorted(children)))
    for m in re.finditer(r"(?<![\w:])((?:%s)(?:::\w+)+)" % names, stripped):
        if any(a <= m.start() < b for a, b in in_use):
            continue
        target = absolute(m.group(1).split("::"), m.start())
        if target is not None:
            found.append(target)
    return found


def code_lines(text):
    """Lines of non-test code: those before the file's trailing `#[cfg(test)]` modules
    (and the doc comments and attributes right above the first of them)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    top = [(k, line) for k, line in enumerate(lines) if line and not line[0].isspace()]
    module = re.compile(r"(pub(\([\w:]+\))? )?mod \w+ \{")

    def trailing(rest):
        """Whether these top-level lines are only `#[cfg(test)]` modules."""
        attrs = []
        for _, line in rest:
            if line.startswith("//"):
                continue
            if line.startswith("#["):
                attrs.append(line)
            elif module.match(line):
                if not any(a.startswith("#[cfg(test)]") for a in attrs):
                    return False
                attrs = []
            elif line != "}":
                return False
        return not attrs

    for idx, (k, line) in enumerate(top):
        if line.startswith("#[cfg(test)]") and trailing(top[idx:]):
            while k > 0 and lines[k - 1].startswith(("///", "#[")):
                k -= 1
            return k
    return len(lines)


def find_cycles(graph):
    """Each strongly connected component of more than one node, as one cycle through
    it (a list of nodes, first repeated at the end)."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for comp in comps:
        start = min(comp)
        # Breadth-first from start back to start, inside the component.
        prev, queue, seen = {}, [start], {start}
        path = None
        while queue and path is None:
            v = queue.pop(0)
            for w in sorted(graph.get(v, ())):
                if w not in comp:
                    continue
                if w == start:
                    path = [w]
                    while v != start:
                        path.append(v)
                        v = prev[v]
                    path.append(start)
                    path.reverse()
                    break
                if w not in seen:
                    seen.add(w)
                    prev[w] = v
                    queue.append(w)
        cycles.append(path)
    return cycles


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "edge/src")
    parser.add_argument(
        "--graph", action="store_true", help="also print what each top-level module imports"
    )
    args = parser.parse_args()
    src = args.src.resolve()
    files = sorted(p for p in src.rglob("*.rs") if p != src / "main.rs")
    if not (src / "lib.rs").exists():
        sys.exit(f"check_layers: {src}/lib.rs not found")
    by_path = {tuple(module_path(src, f)): f for f in files}

    def file_of(segs):
        for k in range(len(segs), -1, -1):
            f = by_path.get(tuple(segs[:k]))
            if f is not None:
                return f
        return None

    def top_of(f):
        segs = module_path(src, f)
        return segs[0] if segs else "(crate root)"

    file_graph, module_graph, failures = {}, {}, []
    edges = 0
    largest = (0, None)
    for f in files:
        text = f.read_text()
        stripped = strip(text)
        children = set(re.findall(r"(?m)^\s*(?:pub(?:\([\w:]+\))?\s+)?mod\s+(\w+)\s*;", stripped))
        here = module_path(src, f)
        name = str(f.relative_to(src))
        file_graph.setdefault(name, set())
        for target in references(stripped, here, children):
            tf = file_of(target)
            if tf is None or tf == f:
                continue
            tname = str(tf.relative_to(src))
            if tname not in file_graph[name]:
                edges += 1
            file_graph[name].add(tname)
            a, b = top_of(f), top_of(tf)
            if a != b:
                module_graph.setdefault(a, set()).add(b)
        count = code_lines(text)
        largest = max(largest, (count, name), key=lambda x: x[0])
        if count > MAX_CODE_LINES:
            failures.append(f"{name}: {count} lines of non-test code (at most {MAX_CODE_LINES})")

    for label, graph in (("top-level modules", module_graph), ("files", file_graph)):
        for cycle in find_cycles(graph):
            failures.append(f"import cycle between {label}: " + " -> ".join(cycle))
    if failures:
        for failure in failures:
            print(f"check_layers: {failure}", file=sys.stderr)
        sys.exit(1)
    modules = {top_of(f) for f in files}
    if args.graph:
        for module in sorted(modules):
            print(f"{module} -> {', '.join(sorted(module_graph.get(module, ()))) or '(nothing)'}")
    print(
        f"check_layers: {len(files)} files, {len(modules)} top-level modules, {edges} imports "
        f"between files, no import cycle; largest non-test code {largest[0]} lines ({largest[1]})"
    )


if __name__ == "__main__":
    main()
