"""The index of the committed results: writes benchmarks/results/README.md from the results files.

    python benchmarks/results_readme.py            # rewrite benchmarks/results/README.md
    python benchmarks/results_readme.py --check    # exit 1 if it is not what the files give

README.md is NOTES.md (the hand-written reading of the results) followed by one section per results
file, in sorted order: a results file is benchmarks/results/*.md, or a folder's report.md (a committed
``cbdm-aug run`` report). Each section gives the file's title line, a run report's verdict, its first
table (at most MAX_ROWS rows) or, without a table, its first paragraph, and links to it and to its companions: the other files
whose name starts with its stem (``tail_gain_rho1000.json``, ``tail_gain_rho1000_per_class.png``),
each given to the longest such stem. Files that belong to no results file are listed last.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
OWN = ("README.md", "NOTES.md")   # written by hand or by this script, not results
MAX_ROWS = 8                      # rows of a results file's first table shown in the index


def results_files(root: Path) -> list[Path]:
    """The results files under ``root``, sorted by their path relative to it."""
    top = [p for p in root.glob("*.md") if p.name not in OWN]
    runs = list(root.glob("*/report.md"))
    return sorted(top + runs, key=lambda p: p.relative_to(root).as_posix())


def title(lines: list[str], name: str) -> str:
    """The first '# ' line, without the '#'; the file name when there is none."""
    return next((line[2:].strip() for line in lines if line.startswith("# ")), name)


def first_table(lines: list[str]) -> list[str]:
    """The first Markdown table: its header, its rule and up to MAX_ROWS rows, then a note of the rest."""
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return []
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    table = lines[start:end]
    rest = len(table) - 2 - MAX_ROWS
    return table[:2 + MAX_ROWS] + (["", f"({rest} more rows in the file)"] if rest > 0 else [])


def first_paragraph(lines: list[str], after: str | None = None) -> list[str]:
    """The first paragraph after the title, or after the heading ``after``: consecutive non-blank
    lines that are not a heading."""
    if after is not None:
        lines = lines[lines.index(after) + 1:] if after in lines else []
    out: list[str] = []
    for line in lines:
        if line.strip() and not line.startswith("#"):
            out.append(line)
        elif out:
            break
    return out


def companions(root: Path, files: list[Path]) -> tuple[dict[Path, list[str]], list[str]]:
    """Each top-level file or folder that is not a results file, given to the results file with the
    longest stem it starts with (``stem.`` or ``stem_``); the ones that fit none."""
    stems = sorted((p.stem for p in files if p.parent == root), key=len, reverse=True)
    by_stem: dict[str, list[str]] = {s: [] for s in stems}
    other: list[str] = []
    taken = {p.relative_to(root).parts[0] for p in files}
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.name in taken or p.name in OWN or p.name.startswith("."):
            continue
        name = p.name + ("/" if p.is_dir() else "")
        stem = next((s for s in stems if p.name == s or p.name.startswith((s + ".", s + "_"))), None)
        (by_stem[stem] if stem else other).append(name)
    return {p: by_stem.get(p.stem, []) if p.parent == root else [] for p in files}, other


def section(root: Path, path: Path, extra: list[str]) -> list[str]:
    """One results file's section: heading, links, summary."""
    rel = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    links = ", ".join(f"[{n}]({n})" for n in extra)
    verdict = first_paragraph(lines, after="## Verdict")   # a run report's one sentence
    summary = (verdict + [""] if verdict else []) + (first_table(lines) or first_paragraph(lines))
    return [f"### {rel}: {title(lines, rel)}", "", f"[{rel}]({rel})" + (f"; also {links}" if links else ""),
            "", *summary, ""]


def render(root: Path) -> str:
    """The whole README.md text for the results folder ``root``."""
    files = results_files(root)
    extra, other = companions(root, files)
    notes_file = root / "NOTES.md"
    notes = notes_file.read_text(encoding="utf-8").rstrip().splitlines() if notes_file.is_file() else []
    out = ["<!-- Written by benchmarks/results_readme.py from NOTES.md and the results files: edit those,",
           "     then run `python benchmarks/results_readme.py`. -->", "", *notes, "",
           "## The results files", "",
           f"One section per results file, in file order: its title, its first table (at most {MAX_ROWS} rows)",
           "or its first paragraph, and its companion files.", ""]
    for p in files:
        out += section(root, p, extra[p])
    if other:
        out += ["## Other files", "", *(f"- [{n}]({n})" for n in other), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="the results folder")
    ap.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = ap.parse_args(argv)
    text, target = render(args.results), args.results / "README.md"
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            print(f"{target} is out of date: run python benchmarks/results_readme.py", file=sys.stderr)
            return 1
        return 0
    from cbdm_aug.atomic import write_text_atomic

    write_text_atomic(target, text)
    print(f"wrote {target}: {len(results_files(args.results))} results files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
