"""Memory of a big mail import: `confide import mbox` on a 2 GB synthetic mbox, peak RSS of the process.

    .venv/bin/python benchmarks/mbox_memory.py [--size-gb 2.0] [--text-mails 5000]

The mbox holds text mails (replies, some with a .txt attachment that is indexed) and, filling it up to the
size, mails with a 1 MiB photo attachment (base64 in the file, named but not indexed), as a real mailbox's
bytes are mostly attachments. The import runs as its own process, exactly as a person runs it; its peak
resident memory comes from the kernel (wait4's ru_maxrss). In the same run the same command imports a
10-mail mbox: the floor of the process (Python, torch, the MiniLM encoder, the embedded Qdrant shard).
Goal (issue 3): under 500 MB for the 2 GB mbox, whatever the size.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIDE = Path(sys.executable).parent / "confide"
WORDS = (
    "boat cabin key pier invoice plumber boiler birthday garden insurance school doctor appointment train "
    "ticket hotel beach weekend meeting project deadline report budget bakery holiday photo concert ferry"
).split()
PHOTO_BYTES = 1024 * 1024


def mail(number: int, when: datetime, rng: random.Random, photo: bool) -> bytes:
    sender = rng.choice(["Anna Berg <anna@example.org>", "Ben Okafor <ben@example.net>", "Carla <carla@example.com>"])
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 200)))
    headers = (
        f"From: {sender}\nTo: Me <me@example.org>\nSubject: {' '.join(rng.sample(WORDS, 3))}\n"
        f"Date: {format_datetime(when)}\nMessage-ID: <m{number}@example.org>\nMIME-Version: 1.0\n"
    )
    boundary = f"b{number}"
    parts = [f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n{text}\n\n> earlier words quoted\n"]
    if photo:
        data = base64.encodebytes(os.urandom(PHOTO_BYTES)).decode("ascii")
        parts.append(
            f"--{boundary}\nContent-Type: image/jpeg\nContent-Transfer-Encoding: base64\n"
            f'Content-Disposition: attachment; filename="photo-{number}.jpg"\n\n{data}'
        )
    elif number % 10 == 0:
        note = " ".join(rng.choice(WORDS) for _ in range(400))
        parts.append(
            f"--{boundary}\nContent-Type: text/plain\n"
            f'Content-Disposition: attachment; filename="notes-{number}.txt"\n\n{note}\n'
        )
    body = "\n".join(parts) + f"--{boundary}--\n"
    header = headers + f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
    return f"From sender {when:%a %b %d %H:%M:%S %Y}\n{header}{body}\n".encode()


def write_mbox(path: Path, size: int, text_mails: int) -> int:
    """Text mails spread among photo mails until the file reaches `size` bytes; the number of mails."""
    rng = random.Random(3)
    start = datetime(2019, 1, 1, tzinfo=UTC)
    written = number = 0
    with path.open("wb") as out:
        while written < size or number < text_mails:
            number += 1
            photo = number % 4 == 0 and written < size
            data = mail(number, start + timedelta(hours=number), rng, photo)
            out.write(data)
            written += len(data)
    return number


def peak_rss_import(mbox: Path, data_dir: Path) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, last line of the summary) of `confide import mbox` in its own process."""
    env = {**os.environ, "CONFIDE_DATA_DIR": str(data_dir)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(CONFIDE), "import", "mbox", str(mbox), "--person", "me"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"confide import failed ({process.returncode}):\n{stderr[-2000:]}")
    summary = [line for line in stderr.splitlines() if "Imported" in line]
    return usage.ru_maxrss / 1024, seconds, (summary[-1].strip() if summary else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--text-mails", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="confide-mbox-") as work:
        folder = Path(work)
        small, big = folder / "small.mbox", folder / "big.mbox"
        write_mbox(small, 0, 10)
        started = time.perf_counter()
        mails = write_mbox(big, int(args.size_gb * 1024**3), args.text_mails)
        size_gb = big.stat().st_size / 1024**3
        print(f"wrote {big.name}: {size_gb:.2f} GB, {mails} mails in {time.perf_counter() - started:.0f} s")
        floor, floor_s, floor_summary = peak_rss_import(small, folder / "data-small")
        print(f"10-mail mbox:  peak RSS {floor:6.0f} MB in {floor_s:5.1f} s   ({floor_summary})")
        peak, seconds, summary = peak_rss_import(big, folder / "data-big")
        print(f"{size_gb:.2f} GB mbox: peak RSS {peak:6.0f} MB in {seconds:5.1f} s   ({summary})")
        print(f"the big import's peak is {peak - floor:+.0f} MB over the floor; goal: under 500 MB in all")


if __name__ == "__main__":
    main()
