"""Benchmark of the identifier matcher (inference guard and corpus scan): recall, false positives, speed.

Run: nice -n 10 .venv/bin/python -m tests.benchmarks.bench_guard [--subjects 1000] [--rules 10000]

0. Recall per text transform (tests/pii/variant_corpus.py: en dashes, no-break and narrow spaces,
   full-width forms, zero-width characters, Cyrillic/Greek look-alikes, accents, case, spelled-out
   digits, "at"/"dot" e-mails, base64/hex) for the guard (keyed hashes, default policy) and for the
   scan's matcher (plain keys), each match required at the exact span of the written value.
   False positives on clean text: 1 KB chunks of English prose (docstrings of the Python standard
   library, never tuned on) and the same chunks lower-cased, against an index of synthetic people
   plus realistic names, distinctive ("Barbara Liskov") and not ("Will Smith").

1. Recall: every subject of the labelled test set (tests/pii/guard_testset.py) in every written form;
   an output counts as caught when a match names the right subject_ref and the value no longer
   appears in the redacted text.
2. False positives: outputs about other people (distractors sharing a first name or a surname, a
   surname one letter off, random people, a first name alone). Outputs whose text holds a form
   that is protected for some subject ("ambiguous", see guard_testset.py) are reported separately.
3. Throughput and latency with --rules active rules (10,000 subjects by default), single thread,
   on 1 KB outputs: chatbot outputs with PII (from the test set) and English prose without any
   (docstrings of the Python standard library, which the guard was not tuned on).
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from pii.guard import GuardPolicy, guard_text
from pii.identifiers import SubjectIdentifiers
from pii.matcher import SCAN_OPTIONS, GuardIndex, PlainIndex, find_matches, is_distinctive_name, rule_hashes
from pii.synth import Person, generate_people
from pii.textnorm import DEFAULT_TRANSFORMS
from tests.pii.guard_testset import generate_testset, subject_identifiers, subject_ref_for
from tests.pii.variant_corpus import WRITERS, generate_variants, identifiers_of

KEY = b"benchmark-guard-key-32-bytes-long!"


def build_index(people: list[Person]) -> GuardIndex:
    rules = []
    for person in people:
        ref = subject_ref_for(person)
        rules.extend((ref, r.kind, r.digest_hex) for r in rule_hashes(subject_identifiers(person), KEY))
    return GuardIndex.build(rules, KEY)


def stdlib_prose(limit_bytes: int) -> str:
    root = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    docs: list[str] = []
    size = 0
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    docs.append(doc)
                    size += len(doc)
        if size >= limit_bytes:
            break
    return "\n\n".join(docs)


# Realistic names for the false-positive check: none appears in the standard library's docstrings.
REAL_NAMES = (
    "Barbara Liskov", "Edsger Dijkstra", "Marta Kowalczyk", "Dmitri Volkov", "Siobhan O'Connell",
    "Kwame Mensah", "Priya Raghunathan", "Lars Henriksen", "Yuki Tanabe", "Lucas Moreau", "Ingrid Solheim",
    "Tomasz Wierzbicki", "Will Smith", "Maria Garcia", "John Park", "Rose Hill", "Mark Long", "James Brown",
    "Sarah Connor", "Chloe Martin", "Fatima Zahra", "Hans Strauss", "Grace Hopper", "Alan Turing",
)


def transforms_table(people: int) -> None:
    subjects = generate_people(people, seed=23)
    variants = generate_variants(subjects, seed=23)
    guard_index = GuardIndex.build(
        [(p.person_id, r.kind, r.digest_hex) for p in subjects for r in rule_hashes(identifiers_of(p), KEY)], KEY
    )
    plain = PlainIndex.build((p.person_id, identifiers_of(p)) for p in subjects)
    with_encoded = GuardPolicy(transforms=DEFAULT_TRANSFORMS | {"encoded"})
    scan_encoded = SCAN_OPTIONS.__class__(transforms=DEFAULT_TRANSFORMS | {"encoded"}, names="any_case", strict_initials=True)
    print(f"\n## Recall per transform ({people} subjects, {len(variants)} variants, exact span required)")
    print(f"{'transform':<16} {'variants':>8} {'guard':>8} {'scan':>8}  target")
    for transform in WRITERS:
        chosen = [v for v in variants if v.transform == transform]
        policy = with_encoded if transform == "encoded" else GuardPolicy()
        options = scan_encoded if transform == "encoded" else SCAN_OPTIONS

        def exact(matches: list, v: object) -> bool:
            return any(m.subject_ref == v.person_id and (m.start, m.end) == (v.start, v.end) for m in matches)  # type: ignore[attr-defined]

        guard_recall = sum(exact(guard_text(v.text, guard_index, policy).matches, v) for v in chosen) / len(chosen)
        scan_recall = sum(exact(find_matches(v.text, plain, options), v) for v in chosen) / len(chosen)
        met = "met" if min(guard_recall, scan_recall) >= 0.99 else "MISSED"
        note = " (option, off by default)" if transform == "encoded" else ""
        print(f"{transform:<16} {len(chosen):>8} {guard_recall:>8.2%} {scan_recall:>8.2%}  >= 99% {met}{note}")


def false_positive_table(prose_chunks: list[str], synthetic: int) -> None:
    people = generate_people(synthetic, seed=11)
    rules = [(subject_ref_for(p), r.kind, r.digest_hex) for p in people for r in rule_hashes(subject_identifiers(p), KEY)]
    for i, name in enumerate(REAL_NAMES):
        rules.extend((f"real-{i}", r.kind, r.digest_hex) for r in rule_hashes(SubjectIdentifiers(full_name=name), KEY))
    index = GuardIndex.build(rules, KEY)
    distinctive = [n for n in REAL_NAMES if is_distinctive_name(n)]
    print(f"\n## False positives on clean text ({len(prose_chunks)} chunks of 1 KB, {synthetic} synthetic people + "
          f"{len(REAL_NAMES)} realistic names, {len(distinctive)} of them distinctive)")
    print(f"distinctive: {', '.join(distinctive)}")
    print(f"{'text':<28} {'names mode':<12} {'chunks flagged':>15}  target")
    for label, chunks in (("prose as written", prose_chunks), ("prose lower-cased", [c.lower() for c in prose_chunks])):
        for mode in ("capitalised", "distinctive", "any_case"):
            flagged = sum(bool(guard_text(c, index, GuardPolicy(names=mode)).matches) for c in chunks)
            share = flagged / len(chunks)
            met = "met" if share <= 0.001 else "MISSED"
            print(f"{label:<28} {mode:<12} {flagged:>6} ({share:6.2%})  <= 0.1% {met}")


def chunks_of(text: str, size: int = 1024) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text) - size + 1, size)]


def time_calls(texts: list[str], index: GuardIndex, policy: GuardPolicy, repeat: int) -> tuple[float, float, float, float]:
    """(MB/s per core, p50 us, p99 us, p99 wall us) over `repeat` single-threaded passes.

    Throughput and p50/p99 are CPU time of this thread (time.thread_time_ns), which is what "per
    core" means and is stable on a shared machine; the wall-clock p99 is given too, since on a
    loaded machine it also counts time spent waiting for a core.
    """
    cpu: list[int] = []
    wall: list[int] = []
    total_bytes = 0
    for _ in range(repeat):
        for text in texts:
            w0 = time.perf_counter_ns()
            t0 = time.thread_time_ns()
            guard_text(text, index, policy)
            cpu.append(time.thread_time_ns() - t0)
            wall.append(time.perf_counter_ns() - w0)
            total_bytes += len(text.encode())
    cpu.sort()
    wall.sort()
    mbps = total_bytes / (sum(cpu) / 1e9) / 1e6
    return mbps, cpu[len(cpu) // 2] / 1000, cpu[int(len(cpu) * 0.99)] / 1000, wall[int(len(wall) * 0.99)] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1000, help="subjects with rules in the labelled set")
    parser.add_argument("--rules", type=int, default=10_000, help="subjects with active rules for timing")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variant-people", type=int, default=300, help="people in the per-transform recall table")
    args = parser.parse_args()

    # 1-2. Recall and false positives.
    subjects = generate_people(args.subjects, seed=11)
    index = build_index(subjects)
    testset = generate_testset(subjects, seed=11)
    policy = GuardPolicy()
    missed: Counter[str] = Counter()
    per_form: Counter[str] = Counter()
    fp_by_form: Counter[str] = Counter()
    positives = caught = negatives = false_pos = ambiguous = ambiguous_flagged = 0
    for output in testset:
        result = guard_text(output.text, index, policy)
        if output.positive:
            positives += 1
            per_form[output.form] += 1
            ok = any(m.subject_ref == output.subject_ref for m in result.matches) and output.value not in result.text
            caught += ok
            if not ok:
                missed[output.form] += 1
        elif output.ambiguous:
            ambiguous += 1
            ambiguous_flagged += bool(result.matches)
        else:
            negatives += 1
            if result.matches:
                false_pos += 1
                fp_by_form[output.form] += 1
    recall = caught / positives
    fp_rate = false_pos / negatives

    # 3. Throughput and latency with many rules.
    many = generate_people(args.rules, seed=11)  # the first `subjects` of these are the same people
    t0 = time.perf_counter()
    big_index = build_index(many)
    build_s = time.perf_counter() - t0
    big_rules = [(subject_ref_for(p), r.kind, r.digest_hex) for p in many for r in rule_hashes(subject_identifiers(p), KEY)]
    chat_text = "\n".join(o.text for o in testset)
    chat_chunks = chunks_of(chat_text)[:2000]
    prose_chunks = chunks_of(stdlib_prose(2_500_000))[:2000]
    timings = {}
    for corpus, chunks in (("chatbot outputs with PII", chat_chunks), ("stdlib prose, no PII", prose_chunks)):
        for mode in ("capitalised", "distinctive", "any_case"):
            fresh = GuardIndex.build(big_rules, KEY)  # an empty miss cache: the first pass is cold
            timings[(corpus, f"{mode} names, cold")] = time_calls(chunks, fresh, GuardPolicy(names=mode), 1)
            timings[(corpus, f"{mode} names, warm")] = time_calls(chunks, fresh, GuardPolicy(names=mode), args.repeat)
    hits_per_chunk = statistics.mean(bool(guard_text(c, big_index).matches) for c in chat_chunks)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nGuard benchmark (single thread, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load:.1f})")
    print(f"labelled set: {args.subjects} subjects with rules, {positives} positives, {negatives} negatives, "
          f"{ambiguous} ambiguous negatives")
    print(f"timing index: {big_index.rule_count} rules for {big_index.subject_count} subjects (built in {build_s:.1f} s)\n")
    rows = [
        ("recall on subject outputs", f"{recall:.2%}", ">= 99%", recall >= 0.99),
        ("false positives, other people", f"{fp_rate:.3%}", "< 0.5%", fp_rate < 0.005),
    ]
    for (corpus, mode), (mbps, p50, p99, p99_wall) in timings.items():
        rows.append((f"throughput per core, {corpus} ({mode})", f"{mbps:.1f} MB/s", ">= 20 MB/s", mbps >= 20))
        rows.append((f"latency 1 KB p50/p99 CPU, {corpus} ({mode})", f"{p50:.0f} / {p99:.0f} us", "p99 < 1000 us", p99 < 1000))
        rows.append((f"latency 1 KB p99 wall, {corpus} ({mode})", f"{p99_wall:.0f} us", "", p99_wall < 1000))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'measured':>16}  {'target':>14}  met")
    for name, value, target, met in rows:
        print(f"{name:<{width}}  {value:>16}  {target:>14}  {'yes' if met else 'NO'}")
    print(f"\nambiguous negatives flagged: {ambiguous_flagged}/{ambiguous} (text identical to a protected form)")
    print(f"share of 1 KB chatbot chunks with at least one hit: {hits_per_chunk:.0%}")
    if missed:
        print("missed positives by form:", ", ".join(f"{f} {n}/{per_form[f]}" for f, n in missed.most_common()))
    if fp_by_form:
        print("false positives by form:", ", ".join(f"{f} {n}" for f, n in fp_by_form.most_common()))
    transforms_table(args.variant_people)
    false_positive_table(prose_chunks, args.rules)


if __name__ == "__main__":
    main()
