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
    """A file that cannot be imported; the message lists each bad line. `code`: not_utf8, empty, header or
    lines (the console's Chinese text is keyed by it)."""

    def __init__(self, message: str, code: str = "lines") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LineProblem:
    """A bad line of a CSV file: its number, a stable code (the console's Chinese text is keyed by it), the
    English message the CLI prints, and values for the text (the line it repeats, the column counts)."""

    line: int
    code: str
    message: str
    values: tuple[tuple[str, object], ...] = ()

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def split_aliases(text: str) -> tuple[str, ...]:
    """`a|b| c` → ("a", "b", "c"): trimmed, empty ones and repeats dropped, order kept."""
    seen: dict[str, None] = {}
    for alias in text.replace("｜", "|").split("|"):
        alias = alias.strip()
        if alias:
            seen.setdefault(alias, None)
    return tuple(seen)


def entry_problem(question: str, answer: str, aliases: Iterable[str]) -> tuple[str, str] | None:
    """What is wrong with an entry as (code, English message), or None. Codes: empty_question, no_words,
    question_too_long, empty_answer, alias_too_long."""
    if not question.strip():
        return "empty_question", "the question is empty"
    if not question_key(question):
        return "no_words", "the question has no letters, digits or Chinese characters"
    if len(question) > MAX_QUESTION:
        return "question_too_long", f"the question is longer than {MAX_QUESTION} characters"
    if not answer.strip():
        return "empty_answer", "the answer is empty"
    for alias in aliases:
        if len(alias) > MAX_ALIAS:
            return "alias_too_long", f"alias {alias[:20]!r}… is longer than {MAX_ALIAS} characters"
    return None


def check_entry(question: str, answer: str, aliases: Iterable[str]) -> str | None:
    """What is wrong with an entry (in English, for operators), or None."""
    found = entry_problem(question, answer, aliases)
    return found[1] if found else None


def parse_csv(data: bytes | str) -> tuple[list[FaqRow], list[LineProblem]]:
    """The good rows of a CSV file and every bad line (a bad line never stops the others from being read).
    A file that cannot be read at all (not UTF-8, empty, a wrong header) raises CsvProblem."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CsvProblem(f"the file is not UTF-8 (byte {exc.start}); save it as UTF-8 CSV", "not_utf8") from None
    else:
        text = data.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[FaqRow] = []
    problems: list[LineProblem] = []
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
                                     f"{','.join(values)}", "header")
                continue
            if len(values) > len(header):
                problems.append(LineProblem(line, "columns", f"{len(values)} columns, the header has {len(header)} "
                                            f"(quote a value that contains a comma)",
                                            (("columns", len(values)), ("header", len(header)))))
                continue
            record = dict(zip(header, (v.strip() for v in values), strict=False))
            question, answer = record.get("question", ""), record.get("answer", "")
            aliases = split_aliases(record.get("aliases", ""))
            problem = entry_problem(question, answer, aliases)
            if problem:
                problems.append(LineProblem(line, *problem))
                continue
            key = question_key(question)
            if key in first_line:
                problems.append(LineProblem(line, "duplicate", f"the same question as line {first_line[key]}",
                                            (("first", first_line[key]),)))
                continue
            first_line[key] = line
            rows.append(FaqRow(line, question, answer, aliases))
    except csv.Error as exc:
        problems.append(LineProblem(reader.line_num, "csv", str(exc)))
    if header is None:
        raise CsvProblem("the file is empty; the first line must be the header question,answer,aliases", "empty")
    return rows, problems


def read_csv(data: bytes | str) -> list[FaqRow]:
    """Parse a CSV file's content; raises CsvProblem naming every bad line (and duplicate questions)."""
    rows, problems = parse_csv(data)
    if problems:
        raise CsvProblem("\n".join(str(p) for p in problems))
    return rows


def write_csv(rows: Iterable[tuple[str, str, Iterable[str]]]) -> str:
    """The CSV text for (question, answer, aliases) rows, with the header; reads back with read_csv."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["question", "answer", "aliases"])
    for question, answer, aliases in rows:
        writer.writerow([question, answer, "|".join(aliases)])
    return out.getvalue()
