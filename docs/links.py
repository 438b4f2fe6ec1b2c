"""Keeps the docs' code references true: `python docs/links.py` rewrites their line ranges.

A reference in docs/*.md looks like

    [`trainer/trainer.py: Trainer._train_step`](../trainer/trainer.py#L250-L259)

and names a module-level function or class, or a method as Class.method. This script finds each
name with Python's ast and rewrites the #L<start>-L<end> part to the lines it spans now;
`python docs/links.py --check` (run by the tests) fails instead, listing stale or unknown names.
"""

import ast
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = re.compile(r"\[`(?P<path>[\w/]+\.py): (?P<name>[\w.]+)`\]\(\.\./(?P=path)(?P<lines>#L\d+-L\d+)?\)")


def definitions(path: str) -> dict[str, tuple[int, int]]:
    """{"name" or "Class.method": (first line, last line)} for one Python file."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    spans = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            spans[node.name] = (node.lineno, node.end_lineno)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    spans[f"{node.name}.{item.name}"] = (item.lineno, item.end_lineno)
    return spans


def update(text: str, problems: list[str]) -> str:
    def replace(match):
        path, name = match["path"], match["name"]
        if not os.path.exists(os.path.join(ROOT, path)):
            problems.append(f"{path}: no such file")
            return match[0]
        span = definitions(path).get(name)
        if span is None:
            problems.append(f"{path}: {name} is not defined there")
            return match[0]
        return f"[`{path}: {name}`](../{path}#L{span[0]}-L{span[1]})"
    return REFERENCE.sub(replace, text)


def main(check: bool) -> int:
    problems = []
    docs = os.path.join(ROOT, "docs")
    for file_name in sorted(os.listdir(docs)):
        if not file_name.endswith(".md"):
            continue
        path = os.path.join(docs, file_name)
        with open(path) as f:
            text = f.read()
        updated = update(text, problems)
        if updated != text:
            if check:
                problems.append(f"docs/{file_name}: line ranges are stale; run python docs/links.py")
            else:
                with open(path, "w") as f:
                    f.write(updated)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))
