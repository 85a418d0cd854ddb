#!/usr/bin/env python3
"""Prints how long each test took, slowest first, from cargo-nextest's JUnit file.

    tests/timings.py target/nextest/default/junit.xml
"""
import sys
import xml.etree.ElementTree as ET


def main(path: str) -> int:
    root = ET.parse(path).getroot()
    rows = []
    for case in root.iter("testcase"):
        status = "ok"
        if case.find("failure") is not None or case.find("error") is not None:
            status = "FAILED"
        elif case.find("skipped") is not None:
            status = "skipped"
        binary = case.get("classname", "")
        rows.append((float(case.get("time", "0")), status, f"{binary} {case.get('name', '')}".strip()))
    rows.sort(reverse=True)
    total = sum(t for t, _, _ in rows)
    print(f"\n==> time per test, slowest first ({len(rows)} tests, {total:.0f} s summed)")
    print(f"{'seconds':>9}  {'':6}  test")
    for t, status, name in rows:
        print(f"{t:9.1f}  {status:6}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
