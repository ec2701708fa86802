"""FAQ entries as CSV (header `question,answer,aliases`, aliases `|`-separated, that column optional).

Pure text in and out, shared by `qunbot faq import/export` and the benchmark. Reading is forgiving where
that is safe (UTF-8 with or without BOM, columns in any order, blank lines, spaces around values) and
strict where a mistake would be silent: every bad row is reported with its line number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from handlers.faq.index import question_key

MAX_QUESTION = 255
MAX_ALIAS = 100
REQUIRED = ("question", "answer")


@dataclass(frozen=True)
class FaqRow:
    """One entry as written in a file: the line it came from, question, answer, aliases."""

    line: int
    question: str
    answer: str
    aliases: tuple[str, ...] = ()


class CsvProblem(ValueError):
    """A file that cannot be imported; the message lists each bad line."""


def split_aliases(text: str) -> tuple[str, ...]:
    """`a|b| c` → ("a", "b", "c"): trimmed, empty ones and repeats dropped, order kept."""
    seen: dict[str, None] = {}
    for alias in text.replace("｜", "|").split("|"):
        alias = alias.strip()
        if alias:
            seen.setdefault(alias, None)
    return tuple(seen)


def check_entry(question: str, answer: str, aliases: Iterable[str]) -> str | None:
    """What is wrong with an entry (in English, for operators), or None."""
    if not question.strip():
        return "the question is empty"
    if not question_key(question):
        return "the question has no letters, digits or Chinese characters"
    if len(question) > MAX_QUESTION:
        return f"the question is longer than {MAX_QUESTION} characters"
    if not answer.strip():
        return "the answer is empty"
    for alias in aliases:
        if len(alias) > MAX_ALIAS:
            return f"alias {alias[:20]!r}… is longer than {MAX_ALIAS} characters"
    return None


def read_csv(data: bytes | str) -> list[FaqRow]:
    """Parse a CSV file's content; raises CsvProblem naming every bad line (and duplicate questions)."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CsvProblem(f"the file is not UTF-8 (byte {exc.start}); save it as UTF-8 CSV") from None
    else:
        text = data.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[FaqRow] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if header is None:
                header = [v.strip().lower() for v in values]
                missing = [c for c in REQUIRED if c not in header]
                unknown = [c for c in header if c not in (*REQUIRED, "aliases")]
                if missing or unknown:
                    raise CsvProblem(f"line {line}: the header must be question,answer[,aliases]; got "
                                     f"{','.join(values)}")
                continue
            if len(values) > len(header):
                problems.append(f"line {line}: {len(values)} columns, the header has {len(header)} "
                                f"(quote a value that contains a comma)")
                continue
            record = dict(zip(header, (v.strip() for v in values), strict=False))
            question, answer = record.get("question", ""), record.get("answer", "")
            aliases = split_aliases(record.get("aliases", ""))
            problem = check_entry(question, answer, aliases)
            if problem:
                problems.append(f"line {line}: {problem}")
                continue
            key = question_key(question)
            if key in first_line:
                problems.append(f"line {line}: the same question as line {first_line[key]}")
                continue
            first_line[key] = line
            rows.append(FaqRow(line, question, answer, aliases))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: {exc}")
    if header is None:
        raise CsvProblem("the file is empty; the first line must be the header question,answer,aliases")
    if problems:
        raise CsvProblem("\n".join(problems))
    return rows


def write_csv(rows: Iterable[tuple[str, str, Iterable[str]]]) -> str:
    """The CSV text for (question, answer, aliases) rows, with the header; reads back with read_csv."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["question", "answer", "aliases"])
    for question, answer, aliases in rows:
        writer.writerow([question, answer, "|".join(aliases)])
    return out.getvalue()
